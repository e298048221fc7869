"""The query service: filters, page tokens, the event store and the gRPC servicer."""
