"""The simulator's account setup: products, prices found by `lookup_key`, meters, webhook endpoints
and customer portal configurations, which `make stripe-setup` creates and the local stack's
simulator starts without.

Checked as Stripe checks them, where our calls can be wrong:
- every enumerated parameter against Stripe's API description in the pinned `stripe` package
  (`stripe_params.py`: webhook `enabled_events` and `api_version`, price, meter and portal fields),
  with Stripe's 400 naming the parameter;
- a parameter an endpoint does not take is "Received unknown parameter: X" (a price's amount,
  currency and recurrence never change: Stripe's price update takes only `active`, `metadata`,
  `nickname`, `lookup_key`, `transfer_lookup_key`, `tax_behavior`, `currency_options`);
- a `lookup_key` names one price: another price asking for it is refused unless it sets
  `transfer_lookup_key`; a product id is unique; a meter's `event_name` is unique among active
  meters; a webhook endpoint's signing `secret` is shown only when it is created; at most 10
  `lookup_keys` per price list.
"""

from __future__ import annotations

import copy
import re
import secrets as pysecrets

import stripe_params

PRICE_UPDATABLE = {"active", "metadata", "nickname", "lookup_key", "transfer_lookup_key", "tax_behavior",
                   "currency_options", "expand"}
PRODUCT_UPDATABLE = {"active", "name", "description", "metadata", "default_price", "images", "marketing_features",
                     "package_dimensions", "shippable", "statement_descriptor", "tax_code", "unit_label", "url", "expand"}
ENDPOINT_CREATABLE = {"url", "enabled_events", "api_version", "description", "metadata", "connect", "expand"}
ENDPOINT_UPDATABLE = {"url", "enabled_events", "description", "metadata", "disabled", "expand"}
PORTAL_FIELDS = {"features", "business_profile", "default_return_url", "login_page", "metadata", "name", "expand", "active"}
METER_CREATABLE = {"display_name", "event_name", "default_aggregation", "customer_mapping", "value_settings",
                   "event_time_window", "expand"}


def _refuse_unknown(params: dict, known: set[str]) -> None:
    from stripe_sim import ApiError

    for key in params:
        if key not in known:
            raise ApiError(400, f"Received unknown parameter: {key}", param=key)


def _refuse_invalid(cls, params: dict) -> None:
    from stripe_sim import ApiError

    found = stripe_params.invalid(cls, params)
    if found:
        raise ApiError(400, found[1], param=found[0])


def _flag(value) -> bool:
    return value in (True, "true")


class SetupResources:
    """Mixed into StripeSimulator: `self.lock` is held by the caller (`route`)."""

    # --- products ----------------------------------------------------------------------------

    def create_product(self, params: dict) -> dict:
        from stripe_sim import FIXTURES, ApiError, new_id

        _refuse_invalid(stripe_params.product_create(), params)
        if not params.get("name"):
            raise ApiError(400, "Missing required param: name.", param="name")
        pid = params.get("id") or new_id("prod")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", pid):
            raise ApiError(400, "Invalid id: use letters, digits, `_` and `-`.", param="id")
        if pid in self.products:
            raise ApiError(400, "Product already exists.", code="resource_already_exists", param="id")
        p = copy.deepcopy(FIXTURES["product"])
        p.update(id=pid, name=params["name"], description=params.get("description"), metadata=params.get("metadata", {}),
                 active=not (params.get("active") in (False, "false")), created=self.now(), updated=self.now(),
                 livemode=False, default_price=None, images=[], package_dimensions=None, type="service")
        self.products[pid] = p
        return p

    def product(self, pid: str) -> dict:
        from stripe_sim import ApiError

        if pid not in self.products:
            raise ApiError(404, f"No such product: '{pid}'", code="resource_missing", param="id")
        return self.products[pid]

    def update_product(self, pid: str, params: dict) -> dict:
        p = self.product(pid)
        _refuse_unknown(params, PRODUCT_UPDATABLE)
        for k in ("name", "description"):
            if k in params:
                p[k] = params[k]
        if "active" in params:
            p["active"] = _flag(params["active"])
        if "metadata" in params:
            p["metadata"] = {**p["metadata"], **params["metadata"]}
        p["updated"] = self.now()
        return p

    def list_products(self, q: dict) -> dict:
        ids = q.get("ids") or []
        data = [p for pid, p in self.products.items() if not ids or pid in ids]
        return {"object": "list", "data": data, "has_more": False, "url": "/v1/products"}

    # --- prices ------------------------------------------------------------------------------

    def claim_lookup_key(self, price_id: str, params: dict) -> str | None:
        """A price's lookup key, taken from any other price only when asked to transfer it."""
        from stripe_sim import ApiError

        key = params.get("lookup_key")
        if key in (None, ""):
            return None
        if len(key) > 200:
            raise ApiError(400, "Invalid lookup_key: must be at most 200 characters", param="lookup_key")
        holder = next((pid for pid, p in self.prices.items() if p.get("lookup_key") == key and pid != price_id), None)
        if holder:
            if not _flag(params.get("transfer_lookup_key")):
                raise ApiError(400, f"A price (`{holder}`) already uses the lookup key `{key}`.", param="lookup_key")
            self.prices[holder]["lookup_key"] = None
        return key

    def list_prices(self, q: dict) -> dict:
        from stripe_sim import ApiError

        keys = q.get("lookup_keys") or []
        if len(keys) > 10:
            raise ApiError(400, "You may pass at most 10 lookup_keys.", param="lookup_keys")
        data = []
        for pid, p in self.prices.items():
            if keys and p.get("lookup_key") not in keys:
                continue
            if "active" in q and p.get("active", True) != _flag(q["active"]):
                continue
            if q.get("product") and p.get("product") != q["product"]:
                continue
            data.append(self.price_json(pid))
        return {"object": "list", "data": data[::-1], "has_more": False, "url": "/v1/prices"}

    def update_price(self, pid: str, params: dict) -> dict:
        from stripe_sim import ApiError

        if pid not in self.prices:
            raise ApiError(404, f"No such price: '{pid}'", code="resource_missing", param="id")
        _refuse_unknown(params, PRICE_UPDATABLE)
        _refuse_invalid(stripe_params.price_update(), params)
        price = self.prices[pid]
        if "lookup_key" in params:
            price["lookup_key"] = self.claim_lookup_key(pid, params)
        if "active" in params:
            price["active"] = _flag(params["active"])
        if "nickname" in params:
            price["nickname"] = params["nickname"] or None
        if "metadata" in params:
            price["metadata"] = {**price.get("metadata", {}), **params["metadata"]}
        if "tax_behavior" in params:
            price["tax_behavior"] = params["tax_behavior"]
        return self.price_json(pid)

    # --- meters ------------------------------------------------------------------------------

    def create_meter(self, params: dict) -> dict:
        from stripe_sim import ApiError, new_id

        _refuse_unknown(params, METER_CREATABLE)
        _refuse_invalid(stripe_params.meter_create(), params)
        for field in ("display_name", "event_name"):
            if not params.get(field):
                raise ApiError(400, f"Missing required param: {field}.", param=field)
        if not (params.get("default_aggregation") or {}).get("formula"):
            raise ApiError(400, "Missing required param: default_aggregation[formula].", param="default_aggregation")
        if any(m["event_name"] == params["event_name"] and m.get("status", "active") == "active" for m in self.meters.values()):
            raise ApiError(400, f"An active meter with event_name `{params['event_name']}` already exists.", param="event_name")
        mapping = params.get("customer_mapping") or {}
        mid = new_id("mtr")
        self.meters[mid] = {
            "event_name": params["event_name"], "display_name": params["display_name"],
            "customer_key": mapping.get("event_payload_key", "stripe_customer_id"),
            "value_key": (params.get("value_settings") or {}).get("event_payload_key", "value"),
            "formula": params["default_aggregation"]["formula"], "status": "active",
        }
        return self.meter_json(mid)

    # --- webhook endpoints -------------------------------------------------------------------

    def endpoint_json(self, endpoint: dict, with_secret: bool = False) -> dict:
        out = {k: v for k, v in endpoint.items() if not k.startswith("_")}
        if with_secret:
            out["secret"] = endpoint["_secrets"][0]
        return out

    def _check_endpoint(self, cls, params: dict) -> None:
        from stripe_sim import ApiError

        _refuse_invalid(cls, params)
        events = params.get("enabled_events")
        if events is not None and (not isinstance(events, list) or not events):
            raise ApiError(400, "Invalid enabled_events: must be a non-empty list of event types", param="enabled_events")
        if "url" in params and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", params["url"] or ""):
            raise ApiError(400, "Invalid URL: must be a URL.", param="url")

    def create_webhook_endpoint(self, params: dict) -> dict:
        from stripe_sim import FIXTURES, ApiError, new_id

        _refuse_unknown(params, ENDPOINT_CREATABLE)
        for field in ("url", "enabled_events"):
            if not params.get(field):
                raise ApiError(400, f"Missing required param: {field}.", param=field)
        self._check_endpoint(stripe_params.webhook_endpoint_create(), params)
        e = copy.deepcopy(FIXTURES["webhook_endpoint"])
        e.update(id=new_id("we"), url=params["url"], enabled_events=list(params["enabled_events"]),
                 api_version=params.get("api_version"), description=params.get("description"),
                 metadata=params.get("metadata", {}), status="enabled", created=self.now(), livemode=False)
        e["_secrets"] = [self.endpoint_secret or f"whsec_{pysecrets.token_hex(16)}"]
        self.webhook_endpoints[e["id"]] = e
        return self.endpoint_json(e, with_secret=True)

    def webhook_endpoint(self, wid: str) -> dict:
        from stripe_sim import ApiError

        if wid not in self.webhook_endpoints:
            raise ApiError(404, f"No such webhook endpoint: '{wid}'", code="resource_missing", param="id")
        return self.webhook_endpoints[wid]

    def update_webhook_endpoint(self, wid: str, params: dict) -> dict:
        e = self.webhook_endpoint(wid)
        _refuse_unknown(params, ENDPOINT_UPDATABLE)
        self._check_endpoint(stripe_params.webhook_endpoint_update(), params)
        for k in ("url", "description"):
            if k in params:
                e[k] = params[k]
        if "enabled_events" in params:
            e["enabled_events"] = list(params["enabled_events"])
        if "disabled" in params:
            e["status"] = "disabled" if _flag(params["disabled"]) else "enabled"
        if "metadata" in params:
            e["metadata"] = {**e["metadata"], **params["metadata"]}
        return self.endpoint_json(e)

    def list_webhook_endpoints(self) -> dict:
        data = [self.endpoint_json(e) for e in self.webhook_endpoints.values()][::-1]
        return {"object": "list", "data": data, "has_more": False, "url": "/v1/webhook_endpoints"}

    # --- customer portal configurations (shape: Stripe's API reference, "The Configuration object") ---

    def create_portal_configuration(self, params: dict) -> dict:
        from stripe_sim import ApiError, new_id

        _refuse_unknown(params, PORTAL_FIELDS)
        if not params.get("features"):
            raise ApiError(400, "Missing required param: features.", param="features")
        _refuse_invalid(stripe_params.portal_configuration_create(), params)
        self._check_portal(params)
        c = {"id": new_id("bpc"), "object": "billing_portal.configuration", "active": True, "application": None,
             "business_profile": {"headline": None, "privacy_policy_url": None, "terms_of_service_url": None},
             "created": self.now(), "default_return_url": None, "features": {}, "is_default": False,
             "livemode": False, "login_page": {"enabled": False, "url": None}, "metadata": {}, "name": None,
             "updated": self.now()}
        self._apply_portal(c, params)
        self.portal_configurations[c["id"]] = c
        return c

    def _check_portal(self, params: dict) -> None:
        from stripe_sim import ApiError

        update = (params.get("features") or {}).get("subscription_update") or {}
        if _flag(update.get("enabled")):
            # Switching plans in the portal works on subscriptions of one licensed price only;
            # ours carry a metered overage price too, so a switch would be refused per customer.
            for i, product in enumerate(update.get("products") or []):
                for j, pid in enumerate(product.get("prices") or []):
                    price = self.prices.get(pid)
                    if price is None:
                        raise ApiError(400, f"No such price: '{pid}'", param=f"features[subscription_update][products][{i}][prices][{j}]")
                    if price["kind"] == "metered":
                        raise ApiError(400, "Metered prices cannot be offered for subscription updates in the portal.",
                                       param=f"features[subscription_update][products][{i}][prices][{j}]")

    def _apply_portal(self, c: dict, params: dict) -> None:
        for k in ("default_return_url", "name"):
            if k in params:
                c[k] = params[k] or None
        if "business_profile" in params:
            c["business_profile"] = {**c["business_profile"], **params["business_profile"]}
        if "metadata" in params:
            c["metadata"] = {**c["metadata"], **params["metadata"]}
        if "active" in params:
            c["active"] = _flag(params["active"])
        for name, feature in (params.get("features") or {}).items():
            merged = {**c["features"].get(name, {}), **feature}
            if "enabled" in merged:
                merged["enabled"] = _flag(merged["enabled"])
            c["features"][name] = merged
        c["updated"] = self.now()

    def update_portal_configuration(self, cid: str, params: dict) -> dict:
        from stripe_sim import ApiError

        if cid not in self.portal_configurations:
            raise ApiError(404, f"No such configuration: '{cid}'", code="resource_missing", param="id")
        _refuse_unknown(params, PORTAL_FIELDS)
        _refuse_invalid(stripe_params.portal_configuration_update(), params)
        self._check_portal(params)
        self._apply_portal(self.portal_configurations[cid], params)
        return self.portal_configurations[cid]

    def list_portal_configurations(self) -> dict:
        data = list(self.portal_configurations.values())[::-1]
        return {"object": "list", "data": data, "has_more": False, "url": "/v1/billing_portal/configurations"}

    # --- routes --------------------------------------------------------------------------------

    def route_setup(self, method: str, r: list[str], params: dict) -> dict | None:
        match method, r:
            case "POST", ["products"]:
                return self.create_product(params)
            case "GET", ["products"]:
                return self.list_products(params)
            case "GET", ["products", pid]:
                return self.product(pid)
            case "POST", ["products", pid]:
                return self.update_product(pid, params)
            case "GET", ["prices"]:
                return self.list_prices(params)
            case "POST", ["prices", pid]:
                return self.update_price(pid, params)
            case "POST", ["billing", "meters"]:
                return self.create_meter(params)
            case "POST", ["webhook_endpoints"]:
                return self.create_webhook_endpoint(params)
            case "GET", ["webhook_endpoints"]:
                return self.list_webhook_endpoints()
            case "GET", ["webhook_endpoints", wid]:
                return self.endpoint_json(self.webhook_endpoint(wid))
            case "POST", ["webhook_endpoints", wid]:
                return self.update_webhook_endpoint(wid, params)
            case "DELETE", ["webhook_endpoints", wid]:
                self.webhook_endpoint(wid)
                del self.webhook_endpoints[wid]
                return {"id": wid, "object": "webhook_endpoint", "deleted": True}
            case "POST", ["billing_portal", "configurations"]:
                return self.create_portal_configuration(params)
            case "GET", ["billing_portal", "configurations"]:
                return self.list_portal_configurations()
            case "POST", ["billing_portal", "configurations", cid]:
                return self.update_portal_configuration(cid, params)
        return None
