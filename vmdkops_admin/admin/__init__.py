"""What an administrator's command does, one module per command group of
``cli/`` (``config`` is ``db.lifecycle``'s): functions that take a session
and the backend, check everything, and raise typed errors; the commands
only parse, call one of them, and print."""
