"""Process housekeeping: device, seeds, plug-ins, secrets, signals, atomic files,
progress and provenance."""
