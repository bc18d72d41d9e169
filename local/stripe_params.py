"""What Stripe accepts for a request's enumerated parameters, read from Stripe's own API
description as the pinned `stripe` package carries it (its `stripe.params` TypedDicts are
generated from Stripe's OpenAPI spec): every `Literal` is a parameter whose values Stripe
enumerates. The simulator refuses any other value as Stripe does: 400 `invalid_request_error`
naming the parameter."""

from __future__ import annotations

import sys
import typing
from functools import cache

import typing_extensions as tx


def _strip(t):
    """NotRequired[X], Optional[X] → X (what a value, when given, must be)."""
    while True:
        origin = tx.get_origin(t)
        if origin in (tx.NotRequired, tx.Required):
            t = tx.get_args(t)[0]
            continue
        if origin is typing.Union:
            args = [a for a in tx.get_args(t) if a is not type(None)]
            t = args[0] if len(args) == 1 else typing.Union[tuple(args)]
            if len(args) == 1:
                continue
        return t


def _resolve(t, module):
    # Forward references inside the generated modules name their own classes.
    if isinstance(t, typing.ForwardRef):
        module = t.__forward_module__ or module
        t = t.__forward_arg__
    if isinstance(t, str):
        try:
            return eval(t, vars(sys.modules[module]))
        except NameError:
            return None  # a type imported only for type checkers (request options): not a parameter
    return t


INTEGER = "<integer>"  # a value list that also takes any whole number (`Literal["inf"] | int`)


@cache
def enums(cls) -> dict[str, frozenset[str]]:
    """`{"enabled_events[]": {...}, "recurring[interval]": {...}}` for a params class."""
    out: dict[str, frozenset[str]] = {}

    def walk(t, path: str, module: str, depth: int) -> None:
        if depth > 8:
            return
        for _ in range(4):
            t = _strip(_resolve(t, module))
        origin = tx.get_origin(t)
        # `Literal[...] | str` is the package's way to keep compiling when Stripe adds a value;
        # the API itself accepts only the listed ones, so the `str` arm is not a value here.
        if origin is tx.Literal or origin is typing.Literal:
            values = {str(v).lower() if isinstance(v, bool) else str(v) for v in tx.get_args(t)}
            if values != {""}:  # `Literal[""] | X`: an empty string unsets X, it is no enumeration
                out[path] = frozenset(out.get(path, frozenset()) | values)
        elif origin in (list, typing.List):
            walk(tx.get_args(t)[0], f"{path}[]", module, depth + 1)
        elif origin is typing.Union:
            for a in tx.get_args(t):
                if a is int:
                    out[path] = frozenset(out.get(path, frozenset()) | {INTEGER})
                elif a is not str:
                    walk(a, path, module, depth + 1)
        elif isinstance(t, type) and hasattr(t, "__annotations__") and tx.is_typeddict(t):
            for name, sub in t.__annotations__.items():
                walk(sub, f"{path}[{name}]" if path else name, t.__module__, depth + 1)

    walk(cls, "", cls.__module__, 0)
    return out


def invalid(cls, params: dict) -> tuple[str, str] | None:
    """The first enumerated parameter whose value Stripe would refuse: (param, message)."""
    allowed = enums(cls)

    def check(value, path: str, shown: str):
        if isinstance(value, dict):
            for k, v in value.items():
                found = check(v, f"{path}[{k}]" if path else k, f"{shown}[{k}]" if shown else k)
                if found:
                    return found
        elif isinstance(value, list):
            for i, v in enumerate(value):
                found = check(v, f"{path}[]", f"{shown}[{i}]")
                if found:
                    return found
        elif path in allowed and str(value) not in allowed[path] and value != "" \
                and not (INTEGER in allowed[path] and str(value).isdigit()):
            values = sorted(allowed[path] - {INTEGER})
            listing = ", ".join(values[:-1]) + f", or {values[-1]}" if len(values) > 1 else values[0]
            return shown, f"Invalid {shown}: must be one of {listing}"
        return None

    return check(params, "", "")


def webhook_endpoint_create():
    from stripe.params._webhook_endpoint_create_params import WebhookEndpointCreateParams
    return WebhookEndpointCreateParams


def webhook_endpoint_update():
    from stripe.params._webhook_endpoint_update_params import WebhookEndpointUpdateParams
    return WebhookEndpointUpdateParams


def price_create():
    from stripe.params._price_create_params import PriceCreateParams
    return PriceCreateParams


def price_update():
    from stripe.params._price_update_params import PriceUpdateParams
    return PriceUpdateParams


def meter_create():
    from stripe.params.billing._meter_create_params import MeterCreateParams
    return MeterCreateParams


def portal_configuration_create():
    from stripe.params.billing_portal._configuration_create_params import ConfigurationCreateParams
    return ConfigurationCreateParams


def portal_configuration_update():
    from stripe.params.billing_portal._configuration_update_params import ConfigurationUpdateParams
    return ConfigurationUpdateParams


def product_create():
    from stripe.params._product_create_params import ProductCreateParams
    return ProductCreateParams
