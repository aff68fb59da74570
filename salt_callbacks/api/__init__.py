"""The HTTP API of AutoPi's routes (``callbacks_api`` salt-api module): config, auth, routes, service."""
