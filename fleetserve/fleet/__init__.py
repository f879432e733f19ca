"""The fleet layer: endpoint discovery, the balancer, the router (and later the
autoscaler). It talks to pods only over HTTP and never imports the engine."""
