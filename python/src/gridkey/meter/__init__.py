"""The meter side: an agent that takes part in negotiations over CoAP or HTTP, and a fleet simulator.

A separate party from the gateway: it uses ``gridkey.protocol`` and ``gridkey.crypto`` and its own
clients, never ``gridkey.gateway`` or ``gridkey.store``.
"""
