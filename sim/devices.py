"""Model: the fleet's devices (IMEIs, SIMs, plates, drivers), deterministic in the seed."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sim.config import DAY_S, SimConfig
from sim.records import SimDevice
from sim.roads import _CITY_COUNTRY, ROADS

_IMEI_MODELS = (
    ("862798", "X3"),
    ("862798", "JC400P"),
    ("353549", "AT4"),
    ("865135", "X3"),
    ("865135", "JC400P"),
    ("359857", "GT06N"),
)
_IMEI_WEIGHTS = (23, 8, 23, 6, 4, 7)
_VEHICLES = (
    ("Toyota", "Probox"),
    ("Toyota", "Succeed"),
    ("Toyota", "Hilux"),
    ("Nissan", "NV200"),
    ("Isuzu", "D-Max"),
    ("Suzuki", "Carry"),
    ("Toyota", "Belta"),
    ("Mitsubishi", "L200"),
)
_FIRST_NAMES = (
    "John",
    "Peter",
    "James",
    "Mary",
    "Grace",
    "David",
    "Joseph",
    "Samuel",
    "Daniel",
    "Esther",
    "Faith",
    "Kevin",
    "Brian",
    "Dennis",
    "Collins",
    "Mercy",
    "Anne",
    "Paul",
    "Stephen",
    "George",
    "Moses",
    "Ruth",
    "Isaac",
    "Lydia",
)
_LAST_NAMES_KE = (
    "Otieno",
    "Kamau",
    "Wanjiru",
    "Mwangi",
    "Ochieng",
    "Njoroge",
    "Kiprono",
    "Mutua",
    "Omondi",
    "Kariuki",
    "Wafula",
    "Chebet",
    "Achieng",
    "Njeri",
    "Mohamed",
    "Hassan",
    "Baraka",
    "Mwakio",
)
_LAST_NAMES_UG = (
    "Okello",
    "Mugisha",
    "Nakato",
    "Ssempala",
    "Byaruhanga",
    "Tumusiime",
    "Nsubuga",
    "Namuli",
    "Kato",
    "Atwine",
)
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def account_names(config: SimConfig) -> list[str]:
    """Account names of the fleet; the first one is the login user (`user_id`)."""
    names = [config.user_id]
    for name in ("fireside", "Fireside@HQ", "Fireside_MSA"):
        if name not in names:
            names.append(name)
    while len(names) < config.accounts:
        names.append(f"acct{len(names) + 1}")
    return names[: max(1, config.accounts)]


def _luhn_digit(body: str) -> str:
    """Check digit that makes `body + digit` pass the Luhn test (as real IMEIs do)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _city_for(index: int) -> str:
    """Nairobi ~60 %, Mombasa ~25 %, Kampala ~15 %, interleaved so small fleets get all three."""
    slot = (index * 13) % 20
    return "Nairobi" if slot < 12 else "Mombasa" if slot < 17 else "Kampala"


def _make_devices(config: SimConfig) -> list[SimDevice]:
    """The fleet's devices, deterministic in `config.seed`."""
    rng = random.Random(f"fleet|{config.seed}")
    accounts = account_names(config)
    seen_imei: set[str] = set()
    seen_plate: set[str] = set()
    out: list[SimDevice] = []
    for i in range(config.devices):
        prefix, mc_type = rng.choices(_IMEI_MODELS, weights=_IMEI_WEIGHTS)[0]
        while True:
            body = prefix + _digits(rng, 14 - len(prefix))
            imei = body + _luhn_digit(body)
            if imei not in seen_imei:
                seen_imei.add(imei)
                break
        city = _city_for(i)
        kenya = _CITY_COUNTRY[city] == "KE"
        while True:
            head = f"K{rng.choice('CD')}" if kenya else f"U{rng.choice('ABM')}"
            plate = (
                f"{head}{rng.choice(_PLATE_LETTERS)} {rng.randint(100, 999)}"
                f"{rng.choice(_PLATE_LETTERS)}"
            )
            if plate not in seen_plate:
                seen_plate.add(plate)
                break
        brand, model = rng.choice(_VEHICLES)
        last = _LAST_NAMES_KE if kenya else _LAST_NAMES_UG
        roads = ROADS[city]
        home_road = rng.randrange(len(roads))
        activation = datetime(2023, 1, 1, tzinfo=UTC).timestamp() + rng.randint(0, 700) * DAY_S
        out.append(
            SimDevice(
                index=i,
                imei=imei,
                account=accounts[i % len(accounts)],
                device_name=f"{mc_type}-{imei[-5:]}",
                mc_type=mc_type,
                sim=("2547" if kenya else "2567") + _digits(rng, 8),
                iccid=("89254" if kenya else "89256") + _digits(rng, 14),
                imsi=("63902" if kenya else "64101") + _digits(rng, 10),
                vehicle_number=plate,
                vehicle_name=f"{model} {plate}",
                vehicle_brand=brand,
                vehicle_model=model,
                vin="".join(rng.choice(_VIN_CHARS) for _ in range(17)),
                engine_number=f"{rng.choice(('1NZ', '2KD', 'HR15', '4JJ1'))}{_digits(rng, 7)}",
                driver_name=f"{rng.choice(_FIRST_NAMES)} {rng.choice(last)}",
                driver_phone=("+2547" if kenya else "+2567") + _digits(rng, 8),
                city=city,
                activation_time=datetime.fromtimestamp(activation + rng.randint(0, DAY_S), UTC),
                expiration=datetime.fromtimestamp(activation + 3650 * DAY_S, UTC),
                home_road=home_road,
                home_s=rng.uniform(500.0, min(roads[home_road].length - 200.0, 12_000.0)),
                base_odometer_km=rng.uniform(5_000.0, 160_000.0),
                daily_km=rng.uniform(60.0, 160.0),
                fuel_100km=round(rng.uniform(7.0, 14.0), 1),
                tank_l=float(rng.choice((40, 45, 50, 60, 70, 80))),
            )
        )
    return out
