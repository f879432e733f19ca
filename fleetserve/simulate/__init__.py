"""The fleet simulator (`fleetserve simulate`): a discrete-event model of pods, routers and the
autoscaler, running the real policies of `fleetserve.fleet` at a scale no machine here can serve.

scenario.py (what to simulate, from YAML), traffic.py (arrivals and request sizes), core.py (the
compiled event loop: pods, router picks, discovery, failures), simulator.py (the run: chunks of
traffic, the autoscaler's decisions between them, the figures), stats.py (histograms to
percentiles), theory.py (Erlang C and the supermarket model, to check the simulator against),
report.py (JSON, PNG, HTML), calibrate.py (a pod's step-time model from measurement).
"""
