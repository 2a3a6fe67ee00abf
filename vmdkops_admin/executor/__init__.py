"""The executor ``vmdk-opsd``: it takes requests from guests, asks the auth DB
and does the disk work through a backend."""
