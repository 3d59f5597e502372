//! The xlb control plane: sources → model → reconcile → datapath.
//!
//! - [`source`] turns a YAML file (native format or Kubernetes documents) into
//!   a [`model::Model`];
//! - [`reconcile`] diffs a model against what is programmed and writes the
//!   datapath maps make-before-break;
//! - [`health`] overlays backend health on the model;
//! - [`announce`] tells routers (BGP) or the segment (ARP / NDP) which VIPs
//!   this instance serves;
//! - [`agent`] runs all of it: reloads, health checks, the admin API
//!   ([`admin`]) and the metrics ([`metrics`]), each listener served by
//!   [`http`] (a request's head bounded in time);
//! - [`cli`] is the `xlb` command line.

pub mod admin;
pub mod agent;
pub mod announce;
pub mod api;
pub mod cli;
pub mod error_text;
pub mod health;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pod_interfaces;
pub mod reconcile;
pub mod source;
