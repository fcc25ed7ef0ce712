//! # shipshape: a compact, readable Kubernetes-style orchestrator
//!
//! Each module is one concept of the seed (a set of study notes on Kubernetes):
//!
//! | module | seed concept |
//! |---|---|
//! | [`api`] | the objects: pods, deployments, services, nodes — which kinds exist, what is valid |
//! | [`store`] | etcd: the distributed key-value store, here raft-rs over sled |
//! | [`apiserver`] | the apiserver: the only door; everything goes through it |
//! | [`scheduler`] | the scheduler: predicates (filters), then priorities (scores), then bind |
//! | [`controllers`] | the controller-manager: ReplicaSet, Deployment, garbage collector |
//! | [`control_plane`] | the master: apiserver + store + scheduler + controllers |
//! | [`agent`] | the kubelet: one node agent per worker node, driving Docker |
//! | [`proxy`] | kube-proxy: node ports forwarded to ready endpoints, round robin |
//! | [`images`] | the workload images, built offline from binaries this crate carries |
//! | [`local_cluster`] | a whole cluster in one process (`shipshape up`) |
//! | [`client`] | how components reach the apiserver (kube-rs) |
//! | [`cli`] | the `shipshape` command |
//!
//! Read top-down: `store` knows nothing of Kubernetes; `api` knows the kinds but not HTTP;
//! `apiserver` joins the two; the scheduler, controllers and agents are API clients that
//! never touch the store; `control_plane` and `local_cluster` start it all.
//!
//! **Memory.** Every program that links this crate allocates through mimalloc (the default
//! `mimalloc` feature). With glibc's malloc, a control plane holding ten thousand pods kept
//! 40 % of its heap as free chunks it never gave back, spread over one arena per busy
//! thread, and spent a fifth of its CPU in malloc and free while it fanned watch events
//! out (`benches/benches/scale.rs` measures both). Built without the feature, the reference
//! uses the system's malloc, which heap profilers such as heaptrack can see into.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod cli;
pub mod client;
pub mod control_plane;
pub mod controllers;
pub mod election;
pub mod failpoints;
pub mod front_door;
pub mod images;
pub mod local_cluster;
pub mod machines;
pub mod proxy;
pub mod scheduler;
pub mod store;
