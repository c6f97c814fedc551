"""WebSocket APIs (API Gateway's third kind of API): clients hold a WebSocket, each message is routed by a
value inside it to an integration, and backends push to any client by its connection id.

- selection.py: the route selection expression and the error frame (pure);
- session.py: RFC 6455 over wsproto with API Gateway's limits, sans-IO;
- api.py: one API's routes, authorizer, API keys and throttles, and the integration calls;
- server.py: the thin asyncio Protocol of a client connection;
- connections.py: the worker's live connections and the @connections operations on them;
- bus.py: the fleet's connection registry and delivery through Redis (shared_state.redis);
- stats.py: ConnectCount, MessageCount and the error counts per route.

docs/websocket.md describes them for users.
"""
