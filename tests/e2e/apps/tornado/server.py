#!/usr/bin/python3
"""Tornado push server: a runnable example of Tornado behind wsgate.

Every client that opens /websocket?Id=ID is registered under its Id, and
once a second the IOLoop (a PeriodicCallback, not a second thread: Tornado
handlers must only be touched from the loop) pushes the current time to
every registered client. Each message names this server (--name), so that
with several servers behind one gateway a page shows which one it is on.
GET / serves index.html, whose script connects back through whatever host
served the page and appends every message to the page.

Run it behind wsgate (use Debian's /usr/bin/python3, which sees the
python3-tornado package):

    /usr/bin/python3 tests/e2e/apps/tornado/server.py --port 8001 --name tornado-1
    /usr/bin/python3 tests/e2e/apps/tornado/server.py --port 8002 --name tornado-2

    # wsgate.yaml
    listeners:
      - address: 127.0.0.1:8080
    routes:
      - upstream: tornado
    upstreams:
      tornado:
        balance: hash        # each Id always reaches the same server,
        hash_key: query:Id   # which holds that client's registration
        servers:
          - address: 127.0.0.1:8001
          - address: 127.0.0.1:8002

    bin/wsgate -config wsgate.yaml
    # open http://127.0.0.1:8080/?Id=alice
"""

import argparse
import json
import os
import time

import tornado.ioloop
import tornado.web
import tornado.websocket

HERE = os.path.dirname(os.path.abspath(__file__))


class PushHandler(tornado.websocket.WebSocketHandler):
    # Id -> handler of the clients connected now.
    clients = {}

    def open(self):
        self.client_id = self.get_argument("Id", "") or str(id(self))
        # A reconnect with the same Id replaces the older connection.
        PushHandler.clients[self.client_id] = self
        self.write_message(json.dumps({
            "type": "hello",
            "server": self.application.settings["server_name"],
            "id": self.client_id,
            # What the gateway says the browser used: "https" for wss://
            # on a TLS listener. (self.request.protocol stays "http"
            # without xheaders=True.)
            "proto": self.request.headers.get("X-Forwarded-Proto"),
        }))

    def on_message(self, message):
        # Not needed for the push; echoing makes the example easy to poke.
        self.write_message(json.dumps({
            "type": "echo",
            "server": self.application.settings["server_name"],
            "id": self.client_id,
            "data": message,
        }))

    def on_close(self):
        if PushHandler.clients.get(self.client_id) is self:
            del PushHandler.clients[self.client_id]

    def check_origin(self, origin):
        # The page is served through the gateway, so its Origin is the
        # gateway's host, not this server's; accept it.
        return True


def push_time(server_name):
    now = time.strftime("%H:%M:%S")
    for client_id, handler in list(PushHandler.clients.items()):
        try:
            handler.write_message(json.dumps({
                "type": "time",
                "server": server_name,
                "id": client_id,
                "time": now,
                "t": time.time(),
            }))
        except tornado.websocket.WebSocketClosedError:
            PushHandler.clients.pop(client_id, None)


class IndexHandler(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        with open(os.path.join(HERE, "index.html"), "rb") as f:
            self.write(f.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--name", default="tornado")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes")
    args = parser.parse_args()

    app = tornado.web.Application(
        [(r"/", IndexHandler), (r"/websocket", PushHandler)],
        server_name=args.name,
    )
    app.listen(args.port, address=args.host)
    tornado.ioloop.PeriodicCallback(lambda: push_time(args.name), args.interval * 1000).start()
    print("tornado %s listening on %s:%d" % (args.name, args.host, args.port), flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
