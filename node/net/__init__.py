"""Transport, handshake, connection manager, discovery and request/response.

Import ``node.net.host.Host`` directly: this package's ``__init__`` stays light so that the
config loader can import ``node.net.params`` without pulling in trio-websocket or gossip.
"""
