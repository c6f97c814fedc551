"""The console: the dashboard page the admin listener serves on ``GET /`` (web.py, static/), and its
terminal twin ``lbd status`` (status.py). Both read the documented admin API only: ``/v1/summary``,
``/v1/load-balancers``, the target-group endpoints and ``/v1/reload``."""
