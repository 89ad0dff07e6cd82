"""The venue's delivery service: access at the hour, measured quality, public evidence.

A GPU-hour token is a bonded promise (PROTOCOL v2, Delivery). This package makes the
`delivered_ppm` of a `delivery_report` a measurement: the venue is an SSH certificate
authority whose certificates open a node to its holder for exactly the delivery window; a
prober logs in every minute of the window with its own certificate and sets compute
challenges; every sample is signed and hash-chained; the report carries the samples' Merkle
root; every operator's record is public. docs/delivery.md is the design.
"""
