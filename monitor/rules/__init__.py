"""Site rules: weekly schedules and zones. Pure (stdlib only, no clock, no I/O), so the
configuration validates with them and the tracker decides with them."""
