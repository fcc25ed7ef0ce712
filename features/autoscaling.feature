@autoscaling
Feature: Replicas follow the load
  A service must stay available at the business peak, and give resources back at the
  trough, to run at the lowest cost. An autoscaler keeps a deployment between the fewest
  and the most replicas it is given: while its replicas use more of the CPU they ask for
  than the share it aims at, it adds replicas, never more than the most; once the load has
  stopped and stayed low for a while, it gives them back. The service keeps answering all
  the while. An autoscaler that cannot measure what it scales on says why.

  Scenario: Replicas are added under load, and given back once it stops
    Given a deployment "web" of probe replicas whose requests each cost 100 milliseconds of CPU, each asking for 100 millicores
    And a service "web" in front of deployment "web" answers within 30 seconds
    And deployment "web" is autoscaled between 1 and 4 replicas at 50% of the CPU it asks for, giving replicas back after 15 seconds of low load
    When clients send requests to the service "web" one after the other
    Then within 60 seconds deployment "web" runs more than 1 ready replica, and never more than 4
    And the traffic to the service "web" stays free of failed requests for 10 more seconds
    And the traffic to the service "web" had no failed request
    Then within the giving-back delay and 60 more seconds deployment "web" runs 1 replica, and never more than 4

  Scenario: An autoscaler says why it cannot scale replicas that ask for no CPU
    Given a deployment "web" of probe replicas that ask for no CPU
    And deployment "web" is autoscaled between 1 and 4 replicas at 50% of the CPU it asks for, giving replicas back after 15 seconds of low load
    Then within 30 seconds the autoscaler of deployment "web" reports that it cannot measure the CPU use, for want of a CPU request
