"""The gateway worker: HTTP (Starlette on uvicorn) and gRPC (grpc.aio) on one event loop.

Appends go to the writer process; every read is served from this process's own
read side. Run with ``hydra gateway [options]``; configuration in
``hydra.gateway.config``.

Modules, by responsibility:

- ``config``      the worker's options (flags and environment)
- ``_server``     process lifetime: sockets, both servers, signals, shutdown
- ``_backend``    writer client + read side, what both APIs call
- ``_http``       the HTTP API (Starlette app)
- ``_grpc``       the gRPC API (servicer, reflection, health)
- ``_requests``   parsing and validation of client input
- ``_encoding``   events as JSON and as protobuf messages
- ``_errors``     the one mapping from errors to HTTP statuses and gRPC codes
- ``_openapi``    the OpenAPI document of the HTTP API
"""
