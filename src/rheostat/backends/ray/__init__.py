"""The Ray backend: workers as Ray actors (``pip install 'rheostat[ray]'``)."""
