"""The executor ``vmdk-opsd``: it takes requests from guests (``server``,
``dispatch``), asks the auth DB what each VM may (``authorize``) and does
the disk work through a backend (``volumes``, with ``options`` of a
create, ``detach`` and ``takeover``)."""
