"""gRPC servicers and interceptors: proto <-> domain <-> store. Never imports sqlalchemy."""
