"""The compute-node agent: joins the controller, heartbeats, and reconciles the instances the
controller wants on this host with what the hypervisor driver reports. It talks to the
controller only over HTTP and never imports ``store``, ``api`` or the services."""
