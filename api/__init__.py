"""The HTTP API (docs/api.md) and the duty console (docs/console.md): FastAPI, bearer tokens
with roles, the console's static files in console/.

    app      create_app() and serve(): the application and its server
    auth     tokens and roles (create_token, revoke_token), the console's sessions
    routes/  one module per resource: devices, hierarchy, people, incidents, console, ...
    live     the console's live feed (server-sent events from NOTIFY)

Importing this package starts nothing and registers no metric: import the module you need.
"""
