//! Where the desired state comes from: a file ([`file`](mod@file)) or Kubernetes
//! objects ([`kube`]), both producing a [`crate::model::Model`].

pub mod file;
pub mod kube;
