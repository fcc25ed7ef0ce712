@service-routing
Feature: A service routes traffic to the ready replicas of its deployment
  A service is a stable endpoint in front of the replicas a label selector picks: "a
  stable endpoint, label-selected, load balanced". It sends each connection to one of the
  replicas that are ready, in turn, so the traffic is spread over them; a replica that is
  not ready, or on its way out, gets none; a new replica gets its share once it is ready.
  Replicas come and go while the service is used, and no request is lost for it: a
  replica leaves the rotation before it is stopped, and finishes what it was answering.

  Scenario: A service reaches only the replicas its selector picks
    Given a deployment "web" of 2 probe replicas checked for readiness is running and ready
    And a deployment "other" of 2 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    When 100 requests are sent to the service "web"
    Then every request was answered by a replica of deployment "web"
    And no request was answered by a replica of deployment "other"

  Scenario: Requests are spread across the replicas
    Given a deployment "web" of 3 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    When 300 requests are sent to the service "web"
    Then every request was answered by a replica of deployment "web"
    And each of the 3 replicas of deployment "web" answered at least 20% of the requests

  @reach-replica
  Scenario: A replica that is not ready gets no traffic
    Given a deployment "web" of 3 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    When the readiness check of one replica of deployment "web" starts failing
    Then within 10 seconds none of 100 requests to the service "web" reaches that replica

  Scenario: New replicas receive traffic once they are ready
    Given a deployment "web" of 2 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    When the deployment "web" is scaled to 4 replicas
    Then within 30 seconds every replica of deployment "web" answers through the service "web"

  Scenario: Scaling down under load loses no request
    Given a deployment "web" of 3 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    And continuous traffic to the service "web" is being answered
    When the deployment "web" is scaled to 1 replica
    Then within 45 seconds 1 replica of deployment "web" is running
    And the traffic to the service "web" stays free of failed requests for 5 more seconds
    And the traffic to the service "web" had no failed request

  @delete-replica
  Scenario: Deleting a replica under load loses no request
    Given a deployment "web" of 3 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    And continuous traffic to the service "web" is being answered
    When one replica of deployment "web" is deleted
    Then within 30 seconds 3 replicas of deployment "web" are running, none of them the deleted one
    And within 30 seconds every replica of deployment "web" answers through the service "web"
    And the traffic to the service "web" stays free of failed requests for 5 more seconds
    And the traffic to the service "web" had no failed request

  @reach-replica @delete-replica
  Scenario: A replica that is deleted finishes the request it is answering
    Given a deployment "web" of 2 probe replicas checked for readiness is running and ready
    When a request that takes 3 seconds is sent to one replica of deployment "web"
    And that replica is deleted while it answers
    Then within 10 seconds the request was answered in full

  @multi-node @disruptive @lose-node
  Scenario: Losing a node under load loses requests only until its replicas leave the rotation
    Given a cluster of 3 ready nodes
    And a deployment "web" of 6 probe replicas checked for readiness is running and ready
    And a service "web" in front of deployment "web" answers within 30 seconds
    And continuous traffic to the service "web" is being answered
    When the node running the most replicas of deployment "web" is lost
    Then within the node grace period, the eviction delay and 20 more seconds, 6 replicas of deployment "web" are running, none of them on the failed node
    And no request to the service "web" failed more than the node grace period and 10 more seconds after the node was lost
