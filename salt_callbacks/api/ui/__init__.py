"""The deliveries page (``/ui/``) of the HTTP API: recent callbacks, each one's
attempts, a Redeliver button and a chart, for a user signed in with Salt eauth.
``routes.install(app, api)`` adds it to the API's app; ``views`` shapes what
it shows; ``static/`` is the page itself (HTML, one script, one stylesheet)."""
