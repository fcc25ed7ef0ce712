@autoscaling
Feature: Replicas follow the load
  A service must stay available at the business peak, and give resources back at the
  trough, to run at the lowest cost. An autoscaler keeps a deployment between the fewest
  and the most replicas it is given: while its replicas use more of the CPU they ask for
  than the share it aims at, it adds replicas, never more than the most; once the load has
  stopped and stayed low for a while, it gives them back. The service keeps answering all
  the while. An autoscaler that cannot measure what it scales on says why.

  The load is real: requests that each cost the replica answering them the same CPU, sent
  at a rate that rises, holds, and stops, so the CPU it asks for is the same on any
  machine. It rises twice. First to a load that fewer replicas than the most can carry at
  the share the autoscaler aims at: there the replicas grow until they use, on average,
  no more than that share. Then to a load that would want more replicas than the most:
  there the replicas stop at the most, though they use more than the share — the peak is
  where "never more than the most" is put to the test. Here each replica asks for 100
  millicores and the autoscaler aims at half, 50 millicores: 8 requests a second of 10
  milliseconds each are 80 millicores, which 2 or 3 replicas carry at the share or under
  it, with what they do for the ordinary requests; 30 a second are 300 millicores, 6
  replicas' worth, and only 4 are allowed. "No more than the share" allows what an
  autoscaler allows itself: 10 % over it. Ordinary requests go on one after the other all
  along, through the growing and the giving-back, and not one of them may fail, nor one
  of the load's. They cost a little too, so once the load stops the replicas may be given
  back in two steps, 4 to 2 then 2 to 1, each after the giving-back delay: the bound
  allows for both.

  Scenario: Replicas are added under load, never more than the most, and given back once it stops
    Given a deployment "web" of probe replicas, each asking for 100 millicores of CPU
    And a service "web" in front of deployment "web" answers within 30 seconds
    And deployment "web" is autoscaled between 1 and 4 replicas at 50% of the CPU it asks for, giving replicas back after 15 seconds of low load
    And continuous traffic to the service "web" is being answered
    When a load of requests to the service "web", each costing 10 milliseconds of CPU, rises to 8 a second over 10 seconds, holds for 30 seconds, rises to 30 a second over 10 seconds, holds for 30 seconds, then stops
    Then once the load holds at 8 requests a second, within 25 seconds deployment "web" runs more than 1 ready replica, and never more than 4, that use on average no more of the CPU they ask for than the autoscaler aims at
    And once the load holds at 30 requests a second, within 25 seconds deployment "web" runs 4 ready replicas, and never more than 4, that use on average more of the CPU they ask for than the autoscaler aims at
    And once the load has stopped, within the giving-back delay and 60 more seconds deployment "web" runs 1 replica, and never more than 4
    And the load had no failed request
    And the traffic to the service "web" had no failed request

  Scenario: An autoscaler says why it cannot scale replicas that ask for no CPU
    Given a deployment "web" of probe replicas that ask for no CPU
    And deployment "web" is autoscaled between 1 and 4 replicas at 50% of the CPU it asks for, giving replicas back after 15 seconds of low load
    Then within 30 seconds the autoscaler of deployment "web" reports that it cannot measure the CPU use, for want of a CPU request
