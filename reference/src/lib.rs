//! # shipshape: a compact, readable Kubernetes-style orchestrator
//!
//! Each module is one concept of the seed (a set of study notes on Kubernetes):
//!
//! | module | seed concept |
//! |---|---|
//! | [`api`] | the objects: pods, deployments, services, nodes — which kinds exist, what is valid |
//! | [`store`] | etcd: the distributed key-value store, here raft-rs over sled |
//! | [`apiserver`] | the apiserver: the only door; everything goes through it |
//! | [`control_plane`] | the master: apiserver + store (+ scheduler and controllers, to come) |
//! | [`cli`] | the `shipshape` command |
//!
//! Read top-down: `store` knows nothing of Kubernetes; `api` knows the kinds but not HTTP;
//! `apiserver` joins the two; `control_plane` starts it all.

pub mod api;
pub mod apiserver;
pub mod cli;
pub mod control_plane;
pub mod store;
