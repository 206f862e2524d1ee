"""A fake chat robot of one platform on loopback, answering as the platform's documented webhook
does, and recording every request for the test. Standard library only.

Checks in this order, each answered as the platform documents it:
  token    DingTalk `access_token` query, WeCom `key` query, Feishu and Slack the last path
           segment, Telegram `/bot<TOKEN>/sendMessage`.
  sign     (--secret) DingTalk's "customize robot security settings": `timestamp` (ms, within an
           hour) and `sign` query parameters, URL-decoded, equal to base64(HMAC-SHA256(key=secret,
           msg="{timestamp}\n{secret}")) as its Python example computes. Feishu's "custom bot":
           `timestamp` (a string, seconds, within an hour) and `sign` in the body, equal to
           base64(HMAC-SHA256(key="{timestamp}\n{secret}", msg=b"")): the string to sign is the KEY.
  limited  (--limited-for S) every authenticated request of the first S seconds gets the
           platform's rate-limit answer: a receiver throttling for a while.
  rate     sliding windows of accepted messages at the documented limits: DingTalk and WeCom
           20/min, Feishu 100/min and 5/s, Slack 1/s (429 Retry-After), Telegram 1/s per chat and
           20/min in a group or channel (429 retry_after). --rate N/S replaces them.
  schema   DingTalk markdown (title, text) or text, `at`, no other top-level key (40035). WeCom
           markdown.content at most 4096 UTF-8 bytes (40058). Feishu body at most 20 KB, an
           interactive card with a plain_text header title and tagged elements (9499, HTTP 400).
           Slack's "escaping text": `&`, `<`, `>` escaped unless in <http..|..>, <@U..>, <#C..>,
           <!here>; at most 40000 characters; documented keys only. Telegram's "HTML style": its
           tags only, nested, every `<` and `&` a tag or an entity ("can't parse entities"), at
           most 4096 characters once parsed ("message is too long").

Every request is appended to --record as a JSON line (before it is answered): platform, accepted,
reason (null, token, sign, limited, rate, schema), detail, text and title of the message (Telegram's
with tags removed and entities decoded), at, body, query.

    python3 im_robots.py --platform dingtalk --port 8080 --record rec.jsonl --token T --secret S
"""

import argparse
import base64
import collections
import hashlib
import hmac
import html
import json
import re
import threading
import time
import traceback
import urllib.parse
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATES = {"dingtalk": [(20, 60)], "wecom": [(20, 60)], "feishu": [(100, 60), (5, 1)],
         "slack": [(1, 1)], "telegram": [(1, 1)]}
SLACK_KEYS = {"text", "blocks", "attachments", "mrkdwn", "username", "icon_emoji", "icon_url",
              "channel", "thread_ts", "unfurl_links", "unfurl_media"}
TELEGRAM_KEYS = {"chat_id", "text", "parse_mode", "message_thread_id", "link_preview_options",
                 "disable_web_page_preview", "disable_notification", "protect_content",
                 "reply_markup"}
TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                 "blockquote", "tg-spoiler", "span"}
TELEGRAM_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|lt|gt|amp|quot);")
SLACK_ALLOWED = re.compile(r"&(?:amp|lt|gt);|<(?:https?://|mailto:)[^<>|]+(?:\|[^<>]*)?>"
                           r"|<[@#][A-Z0-9]+(?:\|[^<>]*)?>|<!(?:here|channel|everyone)>")


def j(status, obj, headers=()):
    """An answer: (status, body, content type, more headers); a str body is sent as text/plain."""
    if isinstance(obj, str):
        return status, obj.encode(), "text/plain", list(headers)
    return status, json.dumps(obj, ensure_ascii=False).encode(), "application/json", list(headers)


DINGTALK_SIGN = ("sign not match, more: "
                 "https://open.dingtalk.com/document/robots/customize-robot-security-settings")
ANSWERS = {  # platform: (wrong token, wrong signature, rate limited, bad message, ok)
    "dingtalk": (j(200, {"errcode": 300001, "errmsg": "token is not exist"}),
                 j(200, {"errcode": 310000, "errmsg": DINGTALK_SIGN}),
                 j(200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}),
                 j(200, {"errcode": 40035, "errmsg": "缺少参数 json"}),
                 j(200, {"errcode": 0, "errmsg": "ok"})),
    "wecom": (j(200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [..]"}), None,
              j(200, {"errcode": 45009, "errmsg": "api freq out of limit"}),
              j(200, {"errcode": 40008, "errmsg": "invalid message type"}),
              j(200, {"errcode": 0, "errmsg": "ok"})),
    "feishu": (j(200, {"code": 19001,
                       "msg": "param invalid: incoming webhook access token invalid"}),
               j(200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour "
                       "from current time"}),
               j(200, {"code": 11232,
                       "msg": "frequency limited psm[lark.oapi.app_platform_runtime]appID[1500]"}),
               j(400, {"code": 9499, "msg": "Bad Request"}),
               j(200, {"code": 0, "msg": "success", "data": {}})),
    "slack": (j(403, "invalid_token"), None, j(429, "rate_limited", [("Retry-After", "1")]),
              j(400, "invalid_payload"), j(200, "ok")),
    "telegram": (j(401, {"ok": False, "error_code": 401, "description": "Unauthorized"}), None,
                 j(429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 1},
                         "description": "Too Many Requests: retry after 1"}),
                 None, None),
}


class Bad(Exception):
    """A malformed message: (detail for the record, the answer if not the platform's usual)."""


def need(cond, detail, answer=None):
    if not cond:
        raise Bad(detail, answer)


def nonempty(v):
    return isinstance(v, str) and v != ""


def dig(obj, *keys):
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj


def b64hmac(key, msg):
    return base64.b64encode(hmac.new(key.encode(), msg.encode(), hashlib.sha256).digest()).decode()


def fresh(ts, per_second):
    """Whether a timestamp (a string of digits) is within an hour of now."""
    return isinstance(ts, str) and ts.isdigit() and abs(time.time() - int(ts) / per_second) <= 3600


class TelegramHTML(HTMLParser):
    """Telegram's HTML parse mode: its tags only, nested, every `<` and `&` a tag or an entity."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.stack, self.out, self.error = [], [], None

    def fail(self, why):
        self.error = self.error or why

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in TELEGRAM_TAGS:
            self.fail(f'unsupported start tag "{tag}"')
        elif tag == "a" and not a.get("href") or tag == "span" and a.get("class") != "tg-spoiler":
            self.fail(f'bad attributes of "{tag}": {a}')
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.fail(f'can\'t find start tag corresponding to end tag "{tag}"')

    def handle_data(self, data):
        if "<" in data or "&" in data:
            self.fail(f"unescaped character in {data[:40]!r}")
        self.out.append(data)

    def handle_entityref(self, name):
        self.out.append(html.unescape(f"&{name};"))

    def handle_charref(self, name):
        self.out.append(html.unescape(f"&#{name};"))

    def unknown_decl(self, data):
        self.fail("unsupported declaration")

    handle_comment = handle_decl = handle_pi = unknown_decl


def telegram_text(text):
    """(plain text, error or None) of an HTML message."""
    p = TelegramHTML()
    outside_tags = re.sub(r"<[^<>]*>", "", text)
    for m in re.finditer("&", outside_tags):
        if not TELEGRAM_ENTITY.match(outside_tags, m.start()):
            p.fail(f"unsupported entity at {outside_tags[m.start():m.start() + 12]!r}")
    p.feed(text)
    p.close()
    if p.stack:
        p.fail(f'can\'t find end tag corresponding to start tag "{p.stack[-1]}"')
    return "".join(p.out), p.error


def lark_md(node, out):
    """Every lark_md text (and markdown element) of a Feishu card, depth first."""
    if isinstance(node, dict):
        if node.get("tag") in ("lark_md", "markdown") and isinstance(node.get("content"), str):
            out.append(node["content"])
        node = list(node.values())
    for v in node if isinstance(node, list) else []:
        lark_md(v, out)
    return out


def text_title(platform, b):
    """(text, title) of a message, as well as can be told from whatever was sent."""
    if not isinstance(b, dict):
        return None, None
    if platform == "dingtalk":
        kind = str(b.get("msgtype"))
        return dig(b, kind, "text" if kind == "markdown" else "content"), dig(b, kind, "title")
    if platform == "wecom":
        return dig(b, str(b.get("msgtype")), "content"), None
    if platform == "feishu":
        parts = lark_md(dig(b, "card", "elements"), [])
        text = "\n".join(parts) if parts else dig(b, "content", "text")
        return text, dig(b, "card", "header", "title", "content")
    text = b.get("text") if isinstance(b.get("text"), str) else None
    if platform == "telegram" and text is not None and b.get("parse_mode") == "HTML":
        text = telegram_text(text)[0]
    return text, None


def schema(platform, path, raw, b, text):
    """Raises Bad unless the message is well formed."""
    need(isinstance(b, dict), "the body is not a JSON object")
    if platform == "dingtalk":
        extra = set(b) - {"msgtype", "markdown", "text", "at"}
        need(not extra, f"unknown keys {sorted(extra)}")
        need(b.get("msgtype") in ("markdown", "text"), f"msgtype {b.get('msgtype')!r}")
        need(nonempty(text), "no text")
        need(b["msgtype"] == "text" or nonempty(dig(b, "markdown", "title")), "no title")
        at = b.get("at", {})
        need(isinstance(at, dict) and isinstance(at.get("isAtAll", False), bool)
             and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                     for v in (at.get("atMobiles", []), at.get("atUserIds", []))), f"bad at {at!r}")
    elif platform == "wecom":
        limit = {"markdown": 4096, "text": 2048}.get(b.get("msgtype"))
        need(limit and nonempty(text), f"msgtype {b.get('msgtype')!r} without content")
        n = len(text.encode())
        need(n <= limit, f"content {n} bytes > {limit}", j(200, {
            "errcode": 40058, "errmsg": f"{b['msgtype']}.content exceed max length {limit}"}))
    elif platform == "feishu":
        need(len(raw) <= 20480, f"body {len(raw)} bytes > 20480")
        if b.get("msg_type") == "text":
            return need(nonempty(dig(b, "content", "text")), "empty text")
        need(b.get("msg_type") == "interactive", f"msg_type {b.get('msg_type')!r}")
        title, els = dig(b, "card", "header", "title"), dig(b, "card", "elements")
        need(dig(title, "tag") == "plain_text" and nonempty(dig(title, "content")),
             f"header.title {title!r}")
        need(isinstance(els, list) and els and all(nonempty(dig(e, "tag")) for e in els),
             "elements must be a non-empty list of tagged objects")
    elif platform == "slack":
        need(nonempty(text), "no text")
        need(not set(b) - SLACK_KEYS, f"unknown keys {sorted(set(b) - SLACK_KEYS)}")
        need(len(text) <= 40000, f"text {len(text)} characters > 40000")
        left = SLACK_ALLOWED.sub("", text)
        m = re.search(r"[&<>]", left)
        need(not m, m and f"unescaped {m.group()!r} in {left[max(0, m.start() - 20):][:45]!r}")
    elif platform == "telegram":
        need(path.endswith("/sendMessage"), "unknown method",
             j(404, {"ok": False, "error_code": 404, "description": "Not Found"}))
        need(not set(b) - TELEGRAM_KEYS, f"unexpected parameters {sorted(set(b) - TELEGRAM_KEYS)}")
        chat = b.get("chat_id")
        need(type(chat) is int or isinstance(chat, str) and re.fullmatch(r"@\w+|-?[0-9]+", chat),
             "chat not found")
        need(nonempty(text), "message text is empty")
        mode = b.get("parse_mode", "HTML")
        need(mode == "HTML", f"unsupported parse_mode {mode!r}")
        err = telegram_text(b["text"])[1] if "parse_mode" in b else None
        need(not err, f"can't parse entities: {err}")
        need(len(text) <= 4096, "message is too long")


class Robot:
    def __init__(self, a):
        self.platform, self.token, self.secret = a.platform, a.token, a.secret
        self.rates = [tuple(map(float, a.rate.split("/")))] if a.rate else RATES[a.platform]
        self.fixed_rate = bool(a.rate)
        self.limited_until = time.time() + a.limited_for
        self.sent = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()
        self.record = open(a.record, "a", encoding="utf-8")
        self.message_id = 0

    def token_ok(self, path, q):
        t = self.token
        return {
            "dingtalk": path == "/robot/send" and q.get("access_token") == t,
            "wecom": path == "/cgi-bin/webhook/send" and q.get("key") == t,
            "feishu": path == f"/open-apis/bot/v2/hook/{t}",
            "slack": path.startswith("/services/") and path.rsplit("/", 1)[1] == t,
            "telegram": path.startswith(f"/bot{t}/"),
        }[self.platform]

    def sign_ok(self, q, b):
        if not self.secret or self.platform not in ("dingtalk", "feishu"):
            return True
        if self.platform == "dingtalk":  # the query value, URL-decoded
            ts, sign = q.get("timestamp"), q.get("sign")
            return fresh(ts, 1000) and isinstance(sign, str) and hmac.compare_digest(
                sign, b64hmac(self.secret, f"{ts}\n{self.secret}"))
        ts, sign = dig(b, "timestamp"), dig(b, "sign")
        return isinstance(ts, str) and fresh(ts, 1) and isinstance(sign, str) and \
            hmac.compare_digest(sign, b64hmac(f"{ts}\n{self.secret}", ""))

    def windows(self, b):
        """(key, limits) of the sliding windows a message counts against."""
        if self.platform != "telegram":
            return "robot", self.rates
        chat = str(dig(b, "chat_id"))
        group = chat.startswith("-") or chat.startswith("@")
        return chat, self.rates + ([(20, 60)] if group and not self.fixed_rate else [])

    def answer(self, reason, detail, b, text):
        wrong_token, wrong_sign, rate, bad, ok = ANSWERS[self.platform]
        if reason in ("rate", "limited"):
            return rate
        if reason in ("token", "sign"):
            return wrong_token if reason == "token" else wrong_sign
        if reason == "schema":
            return bad or j(400, {"ok": False, "error_code": 400,
                                  "description": f"Bad Request: {detail}"})
        if self.platform == "telegram":
            self.message_id += 1
            return j(200, {"ok": True, "result": {"message_id": self.message_id, "text": text,
                                                  "date": int(time.time()),
                                                  "chat": {"id": b["chat_id"]}}})
        return ok

    def handle(self, method, target, raw):
        url = urllib.parse.urlsplit(target)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        try:
            b = json.loads(raw)
        except ValueError:
            b = None
        text, title = text_title(self.platform, b)
        with self.lock:
            now, reason, detail, answer = time.time(), None, "", None
            if method != "POST":
                reason, detail, answer = "schema", f"method {method}", j(405, "")
            elif not self.token_ok(url.path, q):
                reason, detail = "token", "wrong or missing token"
            elif not self.sign_ok(q, b):
                reason, detail = "sign", "missing, stale or wrong signature"
            elif now < self.limited_until:
                reason, detail = "limited", "throttling for a while"
            else:
                key, limits = self.windows(b)
                sent = self.sent[key]
                over = [(n, s) for n, s in limits if sum(t > now - s for t in sent) >= n]
                if over:
                    reason, detail = "rate", f"over {over[0][0]:g} per {over[0][1]:g} s"
                else:
                    try:
                        schema(self.platform, url.path, raw, b, text)
                        sent.append(now)
                        while sent[0] < now - 120:
                            sent.popleft()
                    except Bad as e:
                        reason, (detail, answer) = "schema", e.args
            answer = answer or self.answer(reason, detail, b, text)
            line = {"platform": self.platform, "accepted": reason is None, "reason": reason,
                    "detail": detail, "text": text, "title": title, "at": now, "body": b,
                    "query": q}
            self.record.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.record.flush()
        return answer


def handler(robot):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def body(self):
            if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                raw += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return raw

        def respond(self):
            try:
                status, payload, ctype, headers = robot.handle(self.command, self.path, self.body())
            except Exception as e:  # a bug of this robot's: loudly, as a 500 and on stderr
                traceback.print_exc()
                status, payload, ctype, headers = j(500, f"robot bug: {e!r}")
            self.send_response(status)
            for k, v in [("Content-Type", f"{ctype}; charset=utf-8"),
                         ("Content-Length", str(len(payload)))] + headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET = do_PUT = respond

        def log_message(self, *args):
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", required=True, choices=sorted(RATES))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--secret")
    ap.add_argument("--rate", help="N/SECONDS, instead of the platform's documented limits")
    ap.add_argument("--limited-for", type=float, default=0.0, metavar="SECONDS")
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), handler(Robot(a)))
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
