"""MQTT bridges (paho-mqtt 2.x): key-lifecycle metadata and telemetry to AWS IoT Core, Azure IoT
Hub or any broker, through a durable outbox. See docs/bridges.md."""
