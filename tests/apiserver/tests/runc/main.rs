//! FakeKubelet in runc mode: pods run as runc containers from a busybox image built here with
//! umoci, with the pod spec translated as a kubelet + containerd would. Needs root, runc, umoci
//! and a static /bin/busybox (skips with a reason otherwise).

mod lifecycle;
mod rig;
mod security;
