@control-plane @high-availability
Feature: A control plane of several members survives losing one
  The control plane can run as several masters, for high availability with no downtime:
  they keep one copy of the cluster's data between them, replicated with Raft, and one of
  them leads. When the member that leads dies, or the links to it fail, the others elect a
  new one among themselves and keep serving: every write acknowledged before stays
  acknowledged, every answer the clients get is still explained by one order of their
  operations, and the nodes keep running what they run — no replica is lost, and none is
  started twice. A member cut off from the majority acknowledges nothing, and once the
  links are back it follows the new leader, without the writes it could not commit. A
  member whose machine dies with its data cannot come back as it was, having forgotten
  what it voted for: a new member takes its place and gets the data from the others.

  @kubernetes-api @lose-control-plane-member @disruptive
  Scenario: The leader of the control plane is killed under a steady load of reads and writes
    Given a deployment "web" of 3 probe replicas is running
    And 4 clients create, read, compare-and-set and delete 3 objects through the control plane
    When the member of the control plane that leads is killed abruptly while the deployment "web" runs
    Then within 15 seconds the clients have completed 100 more operations
    And the history of their operations is linearizable
    And the deployment "web" still has the same 3 replicas
    And for 5 seconds deployment "web" keeps exactly 3 replicas, all running

  @kubernetes-api @lose-control-plane-member @disruptive
  Scenario: A member of the control plane that dies with its data is replaced by a new member that catches up from the others
    Given a deployment "web" of 3 probe replicas is running
    And 4 clients create, read, compare-and-set and delete 3 objects through the control plane
    When a member of the control plane that does not lead is killed abruptly and its data lost while the deployment "web" runs
    Then within 15 seconds the clients have completed 100 more operations
    And within 30 seconds a new member has taken its place and serves what the others wrote
    And the history of their operations is linearizable
    And the deployment "web" still has the same 3 replicas
    And for 5 seconds deployment "web" keeps exactly 3 replicas, all running

  @kubernetes-api @partition-control-plane @disruptive
  Scenario: The leader of the control plane is cut off from the other members under a steady load
    Given a deployment "web" of 3 probe replicas is running
    And 4 clients create, read, compare-and-set and delete 3 objects through the control plane
    When the member of the control plane that leads is cut off from the other members while the deployment "web" runs
    Then the member that was cut off acknowledges none of 5 writes sent to it
    And within 15 seconds the clients have completed 100 more operations
    And what the member that was cut off answers to reads of the objects is part of their history
    When the links between the members of the control plane are restored
    Then within 15 seconds the member that was cut off serves what the others wrote meanwhile, and none of the writes sent to it
    And the history of their operations is linearizable
    And the deployment "web" still has the same 3 replicas
    And for 5 seconds deployment "web" keeps exactly 3 replicas, all running
