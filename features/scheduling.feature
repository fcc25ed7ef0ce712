@scheduling
Feature: The scheduler places each pod on a suitable node
  The scheduler picks a worker node for every new pod: first it keeps the nodes that can
  run the pod at all — enough CPU and memory left, the labels the pod asks for, no taint
  the pod does not tolerate — then it picks the best of those, spreading the replicas of a
  deployment over the machines so that losing one machine loses few of them. A pod that
  fits nowhere waits, saying why, until a node with room for it joins the cluster.

  @multi-node @label-node
  Scenario: The replicas of a deployment are spread across the nodes, even when one node is busier
    Given a cluster of 3 ready nodes
    And one of the nodes is labelled "busy=yes"
    When a deployment "batch" of 6 probe replicas selecting nodes "busy=yes" is created
    Then within 60 seconds 6 replicas of deployment "batch" are running
    # The busy node has the least room left, yet it gets its share of "web": were the
    # scheduler to pick only the emptiest nodes, losing one of them would lose 2 of 3.
    When a deployment "web" of 3 probe replicas is created
    Then within 60 seconds 3 replicas of deployment "web" are running
    And every node runs 1 replica of deployment "web"

  @multi-node @pods @add-node
  Scenario: A pod that fits on no node waits, saying why, until a node with room joins
    Given a cluster of 3 ready nodes
    When a probe pod "big" requesting more CPU than any node has is created
    Then within 15 seconds the pod "big" is pending, not scheduled, for a reason naming "cpu"
    And the pod "big" stays pending for 2 seconds
    When a node with room for the pod "big" joins the cluster
    Then within 30 seconds the pod "big" is running on the new node

  @multi-node @label-node
  Scenario: Pods that select nodes by label run only on the nodes with that label
    Given a cluster of 3 ready nodes
    And one of the nodes is labelled "disk=ssd"
    When a deployment "db" of 3 probe replicas selecting nodes "disk=ssd" is created
    Then within 60 seconds 3 replicas of deployment "db" are running
    And every replica of deployment "db" runs on the labelled node

  @multi-node @label-node @taint-node
  Scenario: A taint keeps pods off a node, except pods that tolerate it
    Given a cluster of 3 ready nodes
    And one of the nodes is labelled "dedicated=batch" and tainted "dedicated=batch:NoSchedule"
    When a deployment "web" of 4 probe replicas is created
    Then within 60 seconds 4 replicas of deployment "web" are running
    And no replica of deployment "web" runs on the tainted node
    When a deployment "stray" of 1 probe replica selecting nodes "dedicated=batch" is created
    Then within 15 seconds 1 replica of deployment "stray" is pending, not scheduled, for a reason naming "taint"
    When a deployment "batch" of 1 probe replica selecting nodes "dedicated=batch" and tolerating "dedicated=batch:NoSchedule" is created
    Then within 30 seconds 1 replica of deployment "batch" is running
    And every replica of deployment "batch" runs on the tainted node
