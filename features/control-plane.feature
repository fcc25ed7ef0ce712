@control-plane
Feature: The control plane keeps the desired state
  The control plane is the only door into the cluster. What is written through it is
  kept exactly as written; two writers cannot silently overwrite each other; a write it
  has acknowledged survives the control plane itself failing; and what is deleted takes
  what hangs off it along: a deployment's replicas go with the deployment.

  Like the store behind it, the control plane keeps the data consistent: however many
  clients read and write at once, and whatever fails meanwhile, every answer they get is
  explained by one order of their operations that respects real time — the order one
  copy of the data would have gone through (the history is linearizable). No read sees a
  value older than a write acknowledged before it began; no two writers both succeed in
  replacing the same version.

  Scenario: A deployment is accepted and reported back as written
    When a deployment "web" is created with 3 replicas of image "probe:v1" labelled "app=web,tier=front"
    Then the deployment "web" is reported with 3 replicas of image "probe:v1" labelled "app=web,tier=front"

  @pods
  Scenario: Deleting a deployment takes its replicas with it
    Given a deployment "web" of 3 probe replicas is running
    When the deployment "web" is deleted
    Then within 30 seconds none of the replicas of deployment "web" is left

  @kubernetes-api
  Scenario: A change based on an outdated version is refused
    Given a deployment "web" of 2 probe replicas is running
    And I have read the deployment "web"
    When another client changes the replicas of deployment "web" to 3
    # Once the system has acted on that change, nothing else writes the deployment: what
    # refuses the next change can only be the version it is based on.
    Then within 60 seconds the rollout of deployment "web" is complete
    When I change the replicas of deployment "web" to 5 based on what I read
    Then the change is refused as a conflict
    And the deployment "web" has 3 replicas

  @kubernetes-api @restart-control-plane @disruptive
  Scenario: Deployments and services survive an abrupt restart of the control plane
    Given a deployment "web" with 2 replicas of image "probe:v1"
    And a service "web" sending port 80 to port 8080 of the replicas of deployment "web"
    And I note the deployment "web" and the service "web" as they are now
    When the control plane is killed abruptly and started again
    Then the deployment "web" is unchanged, with the same identity and spec
    And the service "web" is unchanged, with the same identity and spec

  @reach-replica @restart-control-plane @disruptive
  Scenario: The replicas of a deployment run again after an abrupt restart of the control plane
    When a deployment "web" of 2 probe replicas is created
    Then within 60 seconds 2 replicas of deployment "web" are running
    When the control plane is killed abruptly and started again
    Then within 60 seconds the 2 replicas of deployment "web" answer on port 8080

  @kubernetes-api @restart-control-plane @disruptive
  Scenario: What clients read and write stays consistent across an abrupt restart of the control plane
    Given 4 clients create, read, compare-and-set and delete 3 objects through the control plane
    When the control plane is killed abruptly and started again
    Then within 30 seconds the clients have completed 100 more operations
    And the history of their operations is linearizable
