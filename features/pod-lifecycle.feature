@lifecycle @pods
Feature: A pod goes through the phases of its life
  A pod is the smallest unit the cluster runs: one or more containers that share one IP
  address and their storage. Its phase tells where it is in its life: Pending until it is
  placed and its containers are created, Running while a container runs or restarts,
  Succeeded when every container ended well and none will restart, Failed when they all
  ended and one of them failed. The node's agent keeps the containers going as the pod's
  restart policy says, restarts a container whose liveness check fails, takes a pod whose
  readiness check fails out of service without restarting it, and runs only what it may.

  Scenario: A pod whose container ends well, and is not restarted, has succeeded
    When a probe pod "job" that exits with code 0 after 1 second is run with restart policy "Never"
    Then within 30 seconds the pod "job" is in phase Succeeded
    And the pod "job" has not restarted

  Scenario: A pod whose container fails, and is not restarted, has failed
    When a probe pod "job" that exits with code 3 after 1 second is run with restart policy "Never"
    Then within 30 seconds the pod "job" is in phase Failed
    And the pod "job" has not restarted

  Scenario: A container that fails under restart policy OnFailure is restarted again and again
    When a probe pod "retry" that exits with code 3 after 1 second is run with restart policy "OnFailure"
    Then within 40 seconds the pod "retry" has restarted at least 2 times
    And the pod "retry" was never reported in phase Failed

  @reach-replica
  Scenario: The containers of a pod share one address and one volume
    When a pod "duo" is run with two probe containers, "a" on port 8080 and "b" on port 8081, sharing a volume at "/shared"
    Then within 60 seconds the pod "duo" is running and ready
    And container "a" of pod "duo" reaches container "b" on localhost port 8081
    And a file container "a" of pod "duo" writes to "/shared/note" is read back by container "b"

  @reach-replica
  Scenario: A container that fails its liveness check is restarted in place
    Given a probe pod "live" checked for liveness at "/healthz" every second is running and ready
    When the probe in pod "live" is told to fail its liveness check
    Then within 30 seconds the pod "live" has restarted at least 1 time
    And the pod "live" is the same pod, on the same node, at the same address
    And within 30 seconds the pod "live" is running and ready

  @reach-replica
  Scenario: A pod that fails its readiness check is not ready, but keeps running
    Given a probe pod "shy" checked for readiness at "/ready" every second is running and ready
    When the probe in pod "shy" is told to fail its readiness check
    Then within 15 seconds the pod "shy" is running but not ready
    And for 10 seconds the pod "shy" stays running, not ready, and does not restart

  Scenario: A node refuses a privileged pod and waits for a missing image, while other pods keep running
    Given a probe pod "steady" is running and ready
    When a probe pod "root" asking to run privileged is created
    And a pod "ghost" of an image no node has is created
    Then within 30 seconds the pod "root" is refused, with a reason
    And within 30 seconds the pod "ghost" is pending, waiting for its image, with a reason
    And the pod "steady" is still running and ready, and has not restarted
