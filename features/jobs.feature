@jobs
Feature: A job runs pods until their work is done
  Not every workload serves forever. A batch task — an import, a report, a migration —
  does a piece of work and ends. A job runs such pods until a given number of them have
  ended well, never more of them at once than it allows, and then it is complete. A pod of
  the job that fails is replaced by a new one and the work is tried again, but only so many
  times: past the job's limit, the job fails as a whole and runs nothing more. Some work is
  due at set times — a backup every night, a report every hour: a scheduled job starts a
  job each time its schedule comes due, once for each time, and at no other time.

  Scenario: A job runs its pods until enough of them have ended well, never more at once than it allows
    When a job "batch" is created that needs 4 probe pods to end well, 2 at a time, each working 6 seconds
    Then within 90 seconds the job "batch" is complete, with 4 pods ended well
    And at no time did more than 2 pods of the job "batch" run at once

  Scenario: A job whose pods keep failing is tried again up to its limit, and then fails
    When a job "doomed" is created that needs 1 probe pod to end well, tried again at most 2 times, each failing with code 3 after 1 second
    Then within 120 seconds the job "doomed" has failed, after 3 pods failed
    And for 5 seconds the job "doomed" runs no more pods

  @scheduled-jobs
  Scenario: A scheduled job starts a job when its schedule comes due, and at no other time
    When a scheduled job "tick" is created that starts a job every minute, of 1 probe pod working 1 second
    Then within 90 seconds the scheduled job "tick" has started a job when its schedule came due, and the job is complete
    And for 5 seconds the scheduled job "tick" starts no job its schedule does not name
