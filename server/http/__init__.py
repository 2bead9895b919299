"""The edges: WebSocket, SSE, the HTTP API, the taps, pages, and the guard they share."""
