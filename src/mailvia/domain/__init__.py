"""The pure core: channels, routing, replies, retry, states. No I/O, no clock, no framework."""
