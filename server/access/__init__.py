"""Who may call the proxy: the access file's identities, their roles and sources, and the
interceptor that holds every call to them."""
