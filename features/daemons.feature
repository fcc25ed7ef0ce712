@daemons
Feature: A daemon runs on every node that may run it
  Some work belongs to the machines themselves — a log shipper, a monitoring agent — and
  must run once on each of them, however many there are. A daemon runs one pod on every
  node that may run it, and on no other: a node whose labels no longer match what the
  daemon asks for loses its pod. A new version of a daemon replaces its pods node by node.

  Scenario: A daemon runs one pod on every node
    When a daemon "agent" of probe pods is created
    Then within 60 seconds every node that may run daemon "agent" runs exactly one pod of it

  Scenario: A new version of a daemon replaces its pods on every node
    Given a daemon "agent" of probe pods runs on every node
    When the image of daemon "agent" is changed to version v2
    Then within 90 seconds every node that may run daemon "agent" runs exactly one pod of it, of version v2

  @label-node
  Scenario: A daemon runs only on the nodes whose labels it asks for, and leaves a node that loses them
    Given one of the nodes is labelled "daemon=agent"
    When a daemon "agent" of probe pods for nodes labelled "daemon=agent" is created
    Then within 60 seconds every node that may run daemon "agent" runs exactly one pod of it
    And only the labelled node runs a pod of daemon "agent"
    When the labelled node loses its label "daemon"
    Then within 60 seconds no node runs a pod of daemon "agent"
