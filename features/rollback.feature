@rollback
Feature: Rolling updates keep the service up, and any revision can be rolled back to
  A deployment keeps a history: every pod template it has had is one revision. A rolling
  ("gray") update replaces the replicas a few at a time, "without disturbing traffic": no
  more than maxSurge replicas above the count, no more than maxUnavailable below it, and a
  new replica counts only once it is ready. "One-click rollback" returns to the revision
  before, or to any revision of the history, as `kubectl rollout undo [--to-revision=N]`
  does. An update that cannot make progress stalls with the old replicas still serving,
  and says so once its progress deadline has passed. With the Recreate strategy the old
  replicas are all gone before the new ones start, so two versions never serve at once.

  "Back to v1" is judged by what the replicas answer through the service, not by the spec;
  what a rollout promises is checked while it runs, by a traffic generator and a monitor
  that samples the available replicas a few times a second.

  Scenario: A rolling update under load loses no request, and undo brings every replica back to v1
    Given a deployment "web" of 3 probe replicas of version v1 is rolled out, with:
      | maxSurge        | 1 |
      | maxUnavailable  | 1 |
      | minReadySeconds | 2 |
    And a service "web" in front of deployment "web" answers within 30 seconds
    And continuous traffic to the service "web" is being answered
    And the availability of deployment "web" is being monitored
    When the deployment "web" is updated to version v2
    Then within 60 seconds the rollout of deployment "web" is complete
    And within 30 seconds the service "web" answers only as version v2, from each ready replica of deployment "web"
    And within 10 seconds the history of deployment "web" is:
      | revision | version |
      | 1        | v1      |
      | 2        | v2      |
    When the deployment "web" is rolled back
    Then within 60 seconds the rollout of deployment "web" is complete
    And within 30 seconds the service "web" answers only as version v1, from each ready replica of deployment "web"
    And within 10 seconds the history of deployment "web" is:
      | revision | version |
      | 2        | v2      |
      | 3        | v1      |
    And at no time had the deployment "web" fewer than 2 available replicas
    And the traffic to the service "web" had no failed request

  Scenario: Undo to a named revision
    Given a deployment "web" of 3 probe replicas of version v1 is rolled out, with:
      | maxSurge       | 1 |
      | maxUnavailable | 0 |
    And a service "web" in front of deployment "web" answers within 30 seconds
    When the deployment "web" is updated to version v2
    Then within 60 seconds the rollout of deployment "web" is complete
    When the pod template of deployment "web" is changed 1 time, each change rolled out within 60 seconds
    Then within 10 seconds the history of deployment "web" is:
      | revision | version |
      | 1        | v1      |
      | 2        | v2      |
      | 3        | v2      |
    # A plain undo would go to revision 2, which runs v2 too: only revision 1 answers v1.
    When the deployment "web" is rolled back to revision 1
    Then within 60 seconds the rollout of deployment "web" is complete
    And within 30 seconds the service "web" answers only as version v1, from each ready replica of deployment "web"
    And within 10 seconds the history of deployment "web" is:
      | revision | version |
      | 2        | v2      |
      | 3        | v2      |
      | 4        | v1      |

  Scenario: An update to a broken image stalls with the old replicas serving, reports it, and undo recovers
    Given a deployment "web" of 3 probe replicas of version v1 is rolled out, with:
      | maxSurge                | 1  |
      | maxUnavailable          | 0  |
      | progressDeadlineSeconds | 10 |
    And a service "web" in front of deployment "web" answers within 30 seconds
    And continuous traffic to the service "web" is being answered
    And the availability of deployment "web" is being monitored
    When the deployment "web" is updated to version broken
    Then within 45 seconds the deployment "web" reports that its rollout has stalled
    And within 10 seconds the service "web" answers only as version v1, from each ready replica of deployment "web"
    When the deployment "web" is rolled back
    Then within 60 seconds the rollout of deployment "web" is complete
    And within 30 seconds the service "web" answers only as version v1, from each ready replica of deployment "web"
    And at no time had the deployment "web" fewer than 3 available replicas
    And the traffic to the service "web" had no failed request

  Scenario: Recreate never serves two versions at once
    # The replicas take seconds to stop, as real servers do: the new ones may start only
    # once the old ones are gone, not as soon as they were asked to stop.
    Given a deployment "web" of 3 probe replicas of version v1, that take 5 seconds to stop, is rolled out, with:
      | strategy | Recreate |
    And a service "web" in front of deployment "web" answers within 30 seconds
    And continuous traffic to the service "web" is being answered
    And the availability of deployment "web" is being monitored
    When the deployment "web" is updated to version v2
    Then within 60 seconds the rollout of deployment "web" is complete
    And within 30 seconds the service "web" answers only as version v2, from each ready replica of deployment "web"
    And at no time did replicas of two versions of deployment "web" run at once
    # Requests fail while no replica runs: that downtime is what Recreate trades for it.
    And the answers of the service "web" went over from version v1 to version v2 once, and never back

  Scenario: Only revisionHistoryLimit old revisions are kept
    Given a deployment "web" of 3 probe replicas of version v1 is rolled out, with:
      | maxSurge             | 3 |
      | maxUnavailable       | 0 |
      | revisionHistoryLimit | 2 |
    When the pod template of deployment "web" is changed 4 times, each change rolled out within 60 seconds
    # The current revision and the 2 newest old ones; revisions 1 and 2 are gone.
    Then within 15 seconds the history of deployment "web" is:
      | revision | version |
      | 3        | v1      |
      | 4        | v1      |
      | 5        | v1      |

  # The numbers are those of the upstream Kubernetes end-to-end test
  # `testProportionalScalingDeployment` (test/e2e/apps/deployment.go), and follow from the
  # deployment controller's rule for scaling in the middle of a rollout (`scale` in
  # pkg/controller/deployment/sync.go, `getReplicaSetFraction` in
  # pkg/controller/deployment/util/deployment_util.go). Each ReplicaSet holds the replicas
  # of one version, so its size is the number of replicas of that version. With 10
  # replicas, maxSurge 3 and maxUnavailable 2, an update to an image that never becomes
  # ready stalls with the old ReplicaSet at 10 − 2 = 8 and the new one at 10 + 3 − 8 = 5. Scaled to 30, the
  # deployment may have 30 + 3 = 33 replicas, 20 more than the 13 it has; each ReplicaSet
  # gets round(size × 33 / 13) − size of them: the old one 8 → round(20.31) = 20, the new
  # one 5 → round(12.69) = 13. In the test's words: "First rollout's replicaset should have
  # .spec.replicas = 8 + (30-10)*(8/13) = 8 + 12 = 20 replicas", and "Second rollout's
  # replicaset should have .spec.replicas = 5 + (30-10)*(5/13) = 5 + 8 = 13 replicas".
  @scaling
  Scenario: Scaling in the middle of a rollout scales the old and the new version in proportion
    Given a deployment "web" of 10 probe replicas of version v1 is rolled out, with:
      | maxSurge       | 3 |
      | maxUnavailable | 2 |
    When the deployment "web" is updated to version broken
    Then within 60 seconds the replicas of deployment "web" are, by version:
      | version | replicas |
      | v1      | 8        |
      | broken  | 5        |
    When the deployment "web" is scaled to 30 replicas
    Then within 60 seconds the replicas of deployment "web" are, by version:
      | version | replicas |
      | v1      | 20       |
      | broken  | 13       |
