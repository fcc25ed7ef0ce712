@self-healing
Feature: Replicas come back after failures
  A deployment says how many replicas of a pod should run, and the cluster keeps that many
  running whatever fails: "a deployment with 10 replicas, 3 pods crash because their
  machine failed — those 3 pods are scheduled and run on other machines". A container that
  dies is started again in place by its node. A replica that is deleted is replaced by a
  new one. When the control plane cannot talk to the node a pod runs on, the pod's phase is
  Unknown; its replicas are started on other nodes, and once the node is back the
  deployment settles at exactly its replica count. A node drained for maintenance is
  emptied, and gets no new pods until it is uncordoned. A replica asked to stop has its
  grace period to finish, and no longer counts as one of the deployment's replicas.

  @kill-container
  Scenario: A replica whose container is killed is restarted in place
    Given a deployment "web" of 3 probe replicas is running
    When the container of one replica of deployment "web" is killed
    Then within 15 seconds that replica has restarted and is running again, as the same pod on the same node
    And the deployment "web" still has the same 3 replicas

  @delete-replica
  Scenario: A deleted replica is replaced by a new one
    Given a deployment "web" of 3 probe replicas is running
    When one replica of deployment "web" is deleted
    Then within 10 seconds 3 replicas of deployment "web" are running, none of them the deleted one

  # A replica on its way out is no longer one of the deployment's: its replacement does
  # not wait for it to finish stopping.
  @delete-replica
  Scenario: A replica that takes long to stop is replaced at once, while it stops
    Given a deployment "web" of 3 probe replicas that take 20 seconds to stop is running
    When one replica of deployment "web" is deleted
    Then within 10 seconds 3 replicas of deployment "web" are running, none of them the deleted one
    And the deleted replica is still stopping

  # Asked to stop, a replica has its grace period to do it; one that takes longer is
  # stopped when the grace period runs out, not before and not much after.
  @delete-replica
  Scenario: A replica that does not stop within its grace period is stopped when the grace period runs out
    Given a deployment "web" of 1 probe replica that takes 60 seconds to stop, given 3 seconds to do it, is running
    When one replica of deployment "web" is deleted
    Then within 15 seconds the deleted replica is gone, no sooner than 3 seconds after it was deleted

  @multi-node @disruptive @lose-node @restart-node
  Scenario: The replicas of a failed machine run again on the other machines
    Given a cluster of 3 ready nodes
    And a deployment "web" of 10 probe replicas is running
    When the node running the most replicas of deployment "web" is lost
    Then within the node grace period, the eviction delay and 20 more seconds, 10 replicas of deployment "web" are running, none of them on the failed node
    When the failed node is started again
    Then within 30 seconds 10 replicas of deployment "web" are running
    And for 5 seconds deployment "web" keeps exactly 10 replicas, all running

  @multi-node @disruptive @partition-node
  Scenario: The replicas of a node cut off from the control plane turn Unknown and are replaced, and the deployment settles once the node is back
    Given a cluster of 3 ready nodes
    And a deployment "web" of 10 probe replicas is running
    When the node running the most replicas of deployment "web" is cut off from the control plane
    Then within the node grace period and 10 more seconds the replicas of deployment "web" on the failed node are in phase Unknown
    And within the node grace period, the eviction delay and 20 more seconds, 10 replicas of deployment "web" are running, none of them on the failed node
    When the partition heals
    Then within 30 seconds 10 replicas of deployment "web" are running
    And for 5 seconds deployment "web" keeps exactly 10 replicas, all running

  @multi-node @drain-node
  Scenario: A drained node is emptied, and gets no new replicas until it is uncordoned
    Given a cluster of 3 ready nodes
    And a deployment "web" of 6 probe replicas is running
    When the node running the most replicas of deployment "web" is drained
    Then the drained node is reported as not accepting new replicas
    And within 30 seconds 6 replicas of deployment "web" are running, none of them on the drained node
    When the deployment "web" is scaled to 9 replicas
    Then within 30 seconds 9 replicas of deployment "web" are running, none of them on the drained node
    When the drained node is uncordoned
    And the deployment "web" is scaled to 12 replicas
    Then within 30 seconds 12 replicas of deployment "web" are running
    And at least 1 replica of deployment "web" runs on the drained node
