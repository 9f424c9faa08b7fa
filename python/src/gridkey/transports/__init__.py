"""Transports: thin adapters that map a protocol (CoAP, HTTP, later LwM2M, MQTT, WoT) onto the
gateway service and back. A transport imports ``gridkey.gateway`` and never another transport."""
