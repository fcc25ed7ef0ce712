@stateful-sets
Feature: A stateful set keeps the names and the order of its pods
  Not every application is a heap of interchangeable replicas. The members of a database
  or of a queue with a leader each have an identity the others know them by, and must come
  up one after the other. A stateful set gives its pods names that do not change, each
  with an ordinal: 0, 1, 2, and so on. It starts them in that order, each only once the
  one before it runs and is ready. It stops them from the last one back. A pod that is
  lost comes back under the same name. A new version replaces the pods from the last one
  down, and stops at a partition: the pods below it keep the version they run.

  Scenario: A stateful set starts its pods one at a time, in order, under stable names
    When a stateful set "db" of 3 probe pods is created
    Then within 90 seconds the stateful set "db" runs the pods "db-0, db-1, db-2", ready, started one at a time in order

  @delete-replica
  Scenario: A lost pod of a stateful set comes back under its own name
    Given a stateful set "db" of 3 probe pods runs
    When the pod "db-1" of stateful set "db" is deleted
    Then within 60 seconds the stateful set "db" runs the pods "db-0, db-1, db-2", ready
    And "db-1" is a new pod, and the others of stateful set "db" are the ones noted

  Scenario: A stateful set scales down from its last pod
    Given a stateful set "db" of 3 probe pods runs
    When the stateful set "db" is scaled to 1 pod
    Then within 60 seconds the stateful set "db" runs only the pods "db-0", having stopped the others from the last

  @delete-replica
  Scenario: A new version replaces the pods from the last one down, and stops at the partition
    Given a stateful set "db" of 3 probe pods runs
    When the image of stateful set "db" is changed to version v2 from ordinal 1 up
    Then within 90 seconds the stateful set "db" runs "db-1, db-2" of version v2 and "db-0" of version v1, ready, updated from the last
    When the pod "db-0" of stateful set "db" is deleted
    Then within 60 seconds the stateful set "db" runs "db-1, db-2" of version v2 and "db-0" of version v1, ready, updated from the last
