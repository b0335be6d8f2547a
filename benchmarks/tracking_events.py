"""Tracking-like events: what a product-analytics pipeline sends, and what compresses well.

``benchmarks/events.py`` is the worst case for compression (three quarters of its bytes are
random base64). These events are shaped like web and app tracking events instead: a few fields
are random per event, every other value comes from a small set, keys repeat in a fixed order,
and each application adds its own custom fields. Seeded, so every run sees the same bytes.

Random per event (the high-entropy part, about 190 bytes of every event):

- ``event_id``, ``anonymous_id``, ``session_id``: random UUID4s; ``user_id``: ``"u_"`` and 16
  random hex digits; ``sequence``: 1-499.
- ``timestamp``, ``sent_at``: ISO 8601 UTC with milliseconds, uniform over one day
  (2025-11-28); ``sent_at`` 0-2,000 ms after ``timestamp``.
- ``timing`` (optional): page timings in milliseconds and a scroll percentage, uniform in
  fixed ranges.

From small sets, keys always in the same order (a block marked optional is left out when it
would take the event past its size):

- ``event_type`` (12, :data:`EVENT_TYPES`), ``app_id`` (6 applications, :data:`APPS`),
  ``app_version`` (3 per application), ``platform`` (web, ios, android).
- ``context`` (optional): ``user_agent`` (12 browser and app strings, :data:`USER_AGENTS`),
  ``locale`` (10), ``timezone`` (8), ``library`` (name and version by platform), ``screen``
  (6 sizes).
- ``page`` (optional): ``url`` (the application's host, one of 14 paths and, for a third of
  events, the campaign's UTM query), ``path``, ``title`` (one per path), ``referrer`` (8).
- ``geo`` (optional): ``country``, ``region``, ``city``: one of 20 triples (:data:`GEO`).
- ``campaign`` (optional, a third of events): ``source``, ``medium``, ``name``, ``content``:
  one of 8 campaigns (:data:`CAMPAIGNS`).
- ``properties`` (optional): the application's own custom fields (6-9 per application, each
  from 2-8 values, each present with probability 0.8): applications differ in keys and values.
- ``items`` (commerce event types only): 1-3 products of a 40-product catalog (``sku``,
  ``name``, ``category``, ``brand``, ``price``) with a ``quantity`` of 1-3.
- ``flags``: the application's feature flags (160 per application, names of 2-3 words from
  42, in a fixed order, each with one of 6 small value sets); each flag is present with
  probability 0.5, and flags are added until the event reaches its size.

Sizes: :func:`mixed` draws each event's size uniformly in [``low``, ``high``] (0.5-4 KB by
default); the event is filled up to that size and is never below ``low`` (it lands within a
few dozen bytes below the drawn size, except where an application runs out of flags: the
mean is about 2.2 KB at the defaults).

Compression on 2 MB of these (zstandard 0.25, zlib 1.2.13): raw/compressed 5.2 (zstd 1),
5.6 (zstd 3), 6.5 (zstd 6), 3.6 (gzip 1), 5.2 (gzip 6); ``benchmarks/events.py``: about 1.5.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

Event = dict[str, Any]

EVENT_TYPES = (
    "page_view", "page_view", "page_view", "screen_view", "click", "scroll", "search",
    "add_to_cart", "remove_from_cart", "checkout_started", "purchase", "signup", "login",
    "video_play",
)

#: Application id -> (host, versions, custom fields: name -> values).
APPS: dict[str, tuple[str, tuple[str, ...], dict[str, tuple[Any, ...]]]] = {
    "shop-web": ("https://shop.example.com", ("4.12.0", "4.12.1", "4.13.0"), {
        "cart_id_present": (True, False),
        "currency": ("EUR", "USD", "GBP", "SEK"),
        "shipping_method": ("standard", "express", "pickup"),
        "payment_method": ("card", "paypal", "klarna", "apple_pay", "google_pay"),
        "experiment": ("checkout_v2:control", "checkout_v2:treatment", "none"),
        "loyalty_tier": ("none", "silver", "gold", "platinum"),
        "ab_bucket": (0, 1, 2, 3, 4, 5, 6, 7),
    }),
    "shop-ios": ("app://shop.ios", ("7.3.0", "7.3.1", "7.4.0"), {
        "currency": ("EUR", "USD", "GBP"),
        "push_enabled": (True, False),
        "app_state": ("foreground", "background", "launching"),
        "network": ("wifi", "cellular", "offline"),
        "battery_low": (True, False),
        "experiment": ("onboarding_v3:a", "onboarding_v3:b", "none"),
    }),
    "shop-android": ("app://shop.android", ("7.3.0", "7.2.5", "7.4.0"), {
        "currency": ("EUR", "USD", "GBP"),
        "push_enabled": (True, False),
        "app_state": ("foreground", "background", "launching"),
        "network": ("wifi", "cellular", "offline"),
        "store": ("google_play", "huawei_appgallery", "samsung_galaxy_store"),
        "experiment": ("onboarding_v3:a", "onboarding_v3:b", "none"),
        "dark_mode": (True, False),
    }),
    "media-web": ("https://watch.example.com", ("2.0.8", "2.1.0", "2.1.1"), {
        "content_type": ("episode", "movie", "trailer", "live"),
        "genre": ("drama", "comedy", "documentary", "kids", "sports", "news"),
        "quality": ("480p", "720p", "1080p", "2160p"),
        "subscription": ("free", "basic", "standard", "premium"),
        "player": ("html5", "chromecast", "airplay"),
        "autoplay": (True, False),
        "position_bucket": ("0-10%", "10-25%", "25-50%", "50-75%", "75-100%"),
        "cdn": ("edge-fra", "edge-ams", "edge-lhr", "edge-iad"),
    }),
    "news-web": ("https://news.example.com", ("1.44.0", "1.44.2", "1.45.0"), {
        "section": ("politics", "business", "tech", "sport", "culture", "science", "opinion"),
        "paywall": ("open", "metered", "hard"),
        "article_length": ("short", "medium", "long"),
        "logged_in": (True, False),
        "ad_blocker": (True, False),
        "consent": ("all", "necessary", "none"),
    }),
    "bank-web": ("https://bank.example.com", ("9.1.0", "9.1.3", "9.2.0"), {
        "product": ("current_account", "savings", "credit_card", "mortgage", "loan"),
        "step": ("landing", "details", "identity", "review", "done"),
        "mfa": ("sms", "app", "hardware_key", "none"),
        "customer_segment": ("retail", "premium", "business"),
        "channel": ("organic", "branch_referral", "partner"),
        "form_errors": (0, 0, 0, 1, 2),
        "consent": ("all", "necessary"),
        "risk_band": ("low", "medium", "high"),
        "language": ("de", "en", "fr", "it"),
    }),
}

PLATFORM_OF = {"shop-web": "web", "shop-ios": "ios", "shop-android": "android",
               "media-web": "web", "news-web": "web", "bank-web": "web"}
LIBRARY_OF = {"web": ("analytics.js", "4.15.3"), "ios": ("analytics-ios", "5.2.1"),
              "android": ("analytics-android", "5.1.0")}

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.2849.68",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.39 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.6723.102 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Mobile/15E148 Safari/604.1",
    "Shop/7.3.1 (iPhone15,2; iOS 18.1; Scale/3.00) CFNetwork/1568.200.51 Darwin/24.1.0",
    "Shop/7.4.0 (Linux; U; Android 14; Pixel 7 Build/AP2A.240905.003) okhttp/4.12.0",
)
LOCALES = ("de-DE", "en-US", "en-GB", "fr-FR", "it-IT", "es-ES", "nl-NL", "sv-SE", "pl-PL",
           "de-AT")
TIMEZONES = ("Europe/Berlin", "Europe/London", "Europe/Paris", "America/New_York",
             "Europe/Madrid", "Europe/Stockholm", "Europe/Warsaw", "Europe/Vienna")
SCREENS = ((1920, 1080), (2560, 1440), (1440, 900), (390, 844), (412, 915), (820, 1180))
PATHS = (
    ("/", "Home"), ("/search", "Search results"), ("/category/shoes", "Shoes"),
    ("/category/jackets", "Jackets"), ("/product/sneaker-air-2", "Sneaker Air 2"),
    ("/product/rain-jacket-pro", "Rain Jacket Pro"), ("/cart", "Your cart"),
    ("/checkout/shipping", "Checkout: shipping"), ("/checkout/payment", "Checkout: payment"),
    ("/checkout/confirmation", "Thank you for your order"), ("/account", "Your account"),
    ("/account/orders", "Your orders"), ("/help/returns", "Returns and refunds"),
    ("/blog/autumn-collection", "The autumn collection is here"),
)
REFERRERS = ("", "https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/",
             "https://www.facebook.com/", "https://t.co/", "https://www.instagram.com/",
             "https://newsletter.example.com/")
GEO = (
    ("DE", "BE", "Berlin"), ("DE", "BY", "Munich"), ("DE", "HH", "Hamburg"),
    ("DE", "HE", "Frankfurt am Main"), ("AT", "9", "Vienna"), ("CH", "ZH", "Zurich"),
    ("FR", "IDF", "Paris"), ("FR", "ARA", "Lyon"), ("GB", "ENG", "London"),
    ("GB", "ENG", "Manchester"), ("NL", "NH", "Amsterdam"), ("BE", "BRU", "Brussels"),
    ("IT", "25", "Milan"), ("ES", "MD", "Madrid"), ("SE", "AB", "Stockholm"),
    ("PL", "14", "Warsaw"), ("US", "NY", "New York"), ("US", "CA", "San Francisco"),
    ("US", "WA", "Seattle"), ("CA", "ON", "Toronto"),
)
CAMPAIGNS = (
    ("google", "cpc", "black_friday_2025", "text_ad_1"),
    ("google", "cpc", "brand_search", "text_ad_brand"),
    ("facebook", "paid_social", "autumn_collection", "carousel_v2"),
    ("instagram", "paid_social", "autumn_collection", "story_15s"),
    ("newsletter", "email", "weekly_2025_48", "hero_banner"),
    ("newsletter", "email", "cart_reminder", "cta_button"),
    ("affiliate_network", "affiliate", "partner_program", "deal_listing"),
    ("tiktok", "paid_social", "sneaker_launch", "video_30s"),
)
BRANDS = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Adventure Works")
CATEGORIES = ("shoes", "jackets", "shirts", "trousers", "accessories", "bags", "sportswear",
              "outdoor")
CATALOG = tuple(
    {
        "sku": f"SKU-{10_000 + 37 * i}",
        "name": f"{BRANDS[i % 5]} {CATEGORIES[i % 8].rstrip('s').title()} {i % 7 + 1}",
        "category": CATEGORIES[i % 8],
        "brand": BRANDS[i % 5],
        "price": round(9.99 + (i * 7.5) % 190, 2),
    }
    for i in range(40)
)

COMMERCE_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "checkout_started", "purchase"})

_FLAG_WORDS = ("new", "checkout", "search", "ranking", "banner", "recommendations", "cart",
               "promo", "dark", "mode", "fast", "payment", "login", "sso", "video", "autoplay",
               "feed", "v2", "v3", "beta", "redesign", "price", "badge", "shipping", "express",
               "reviews", "wishlist", "guest", "one", "click", "lazy", "images", "cdn", "edge",
               "cache", "prefetch", "menu", "footer", "header", "sticky", "coupon", "loyalty")
_FLAG_VALUES: tuple[tuple[Any, ...], ...] = (
    (True, False), (True, False, False), ("control", "treatment"),
    ("control", "variant_a", "variant_b"), ("off", "on", "holdout"), (0, 1, 2, 3),
)


def _flags(seed: int, count: int) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    rng = random.Random(seed)
    names: dict[str, tuple[Any, ...]] = {}
    while len(names) < count:
        name = "-".join(rng.sample(_FLAG_WORDS, rng.randrange(2, 4)))
        names.setdefault(name, rng.choice(_FLAG_VALUES))
    return tuple(names.items())


#: Application id -> its feature flags in the order they are sent, each with its values.
FLAGS = {app: _flags(k, 160) for k, app in enumerate(APPS)}

DAY_MS = 86_400_000


def _stamp(ms: int) -> str:
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"2025-11-28T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def _uuid4(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _size(event: Event) -> int:
    return len(orjson.dumps(event))


def make_event(rng: random.Random, size: int, low: int = 512) -> Event:
    """One tracking event encoded to at most ``size`` bytes, or a little more (one flag) when
    that is needed to reach ``low``."""
    app = rng.choice(tuple(APPS))
    host, versions, fields = APPS[app]
    platform = PLATFORM_OF[app]
    ms = rng.randrange(DAY_MS - 2000)
    event: Event = {
        "event_id": _uuid4(rng),
        "event_type": rng.choice(EVENT_TYPES),
        "timestamp": _stamp(ms),
        "sent_at": _stamp(ms + rng.randrange(2000)),
        "app_id": app,
        "app_version": rng.choice(versions),
        "platform": platform,
        "user_id": f"u_{rng.getrandbits(64):016x}",
        "anonymous_id": _uuid4(rng),
        "session_id": _uuid4(rng),
        "sequence": rng.randrange(1, 500),
    }
    width, height = rng.choice(SCREENS)
    path, title = rng.choice(PATHS)
    campaign = rng.choice(CAMPAIGNS) if rng.random() < 1 / 3 else None
    query = (f"?utm_source={campaign[0]}&utm_medium={campaign[1]}&utm_campaign={campaign[2]}"
             if campaign else "")
    country, region, city = rng.choice(GEO)
    library, library_version = LIBRARY_OF[platform]
    optional: list[tuple[str, Any]] = [
        ("context", {
            "user_agent": rng.choice(USER_AGENTS), "locale": rng.choice(LOCALES),
            "timezone": rng.choice(TIMEZONES),
            "library": {"name": library, "version": library_version},
            "screen": {"width": width, "height": height},
        }),
        ("page", {"url": f"{host}{path}{query}", "path": path, "title": title,
                  "referrer": rng.choice(REFERRERS)}),
        ("geo", {"country": country, "region": region, "city": city}),
        ("timing", {"dns_ms": rng.randrange(120), "connect_ms": rng.randrange(250),
                    "ttfb_ms": rng.randrange(40, 900), "dom_ms": rng.randrange(200, 4000),
                    "load_ms": rng.randrange(300, 9000), "scroll_pct": rng.randrange(101)}),
    ]
    if campaign:
        optional.append(("campaign", dict(zip(("source", "medium", "name", "content"),
                                              campaign, strict=True))))
    properties = {name: rng.choice(values) for name, values in fields.items()
                  if rng.random() < 0.8}
    optional.append(("properties", properties))
    for key, value in optional:
        event[key] = value
        if _size(event) > size:
            del event[key]
    if event["event_type"] in COMMERCE_EVENTS:
        items = [dict(rng.choice(CATALOG), quantity=rng.randrange(1, 4))
                 for _ in range(rng.randrange(1, 4))]
        event["items"] = items
        while items and _size(event) > size:
            items.pop()
        if not items:
            del event["items"]
    # Feature flags fill the event to its size: the application's flags in a fixed order, each
    # evaluated (present) for some events only, each value from a small set.
    flags: dict[str, Any] = {}
    length = _size(event)
    for name, values in FLAGS[app]:
        if rng.random() < 0.5:
            continue
        value = rng.choice(values)
        # ',"flags":{}' with the first flag, a comma with every later one; then "name":value
        grown = length + (1 if flags else 11) + len(name) + 3 + len(orjson.dumps(value))
        if grown > size and length >= low:
            break
        flags[name] = value
        length = grown
    if flags:
        event["flags"] = flags
    return event


def mixed(count: int, seed: int = 5, low: int = 512, high: int = 4096) -> list[Event]:
    """``count`` events, each encoded to a size drawn uniformly in [low, high] (or just below)."""
    rng = random.Random(seed)
    return [make_event(rng, rng.randrange(low, high + 1), low) for _ in range(count)]
