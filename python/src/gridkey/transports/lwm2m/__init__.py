"""LwM2M transport: GridKey meters as LwM2M 1.1 clients of a device-management server (e.g. Eclipse Leshan).

The custom objects (GridKey Group Membership 33001, GridKey Meter Credential 33002) are defined by the
OMA DDF files in ``lwm2m-objects/`` at the repository root; :mod:`.objects` mirrors them as Python data
so the client never has to parse XML at run time, and a test keeps the two in step.
"""
