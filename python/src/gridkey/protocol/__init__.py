"""The sans-IO protocol core: messages, state machines, key schedule, group data messages.

Pure: no sockets, no clock reads, no database, no threads. Time and randomness are inputs.
"""
