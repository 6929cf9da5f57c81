"""Fixed seed fixtures: tenants, facilities, item kinds, taxonomies, customers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ItemKind:
    """A kind of Flourish item and the Apex product it becomes."""

    label: str
    uom: str
    item_class: str
    item_category: str
    apex_unit: str
    apex_category: str
    qty_range: tuple[float, float]
    qty_decimals: int
    price_cents: tuple[int, int]
    unit_weight: float | None = None
    units_per_case: int | None = None


KINDS: dict[str, ItemKind] = {
    "bulk_g": ItemKind(
        "Bulk Flower", "g", "Buds", "Flower", "Pound", "Flower",
        (250, 6000), 4, (120_000, 220_000),
    ),
    "bulk_lb": ItemKind(
        "Bulk Flower LB", "lb", "Buds", "Flower", "Pound", "Flower",
        (1, 25), 2, (110_000, 200_000),
    ),
    "smalls": ItemKind(
        "Smalls", "g", "Buds", "Flower", "Pound", "Flower",
        (200, 4000), 2, (60_000, 110_000),
    ),
    "resin": ItemKind(
        "Live Resin", "g", "Concentrate", "Concentrate", "Gram", "Concentrate",
        (50, 2000), 3, (600, 1400),
    ),
    "preroll": ItemKind(
        "Pre-Roll 1g", "ea", "Pre-Roll", "Pre-Roll", "Unit", "Pre-roll",
        (24, 600), 0, (300, 700), unit_weight=1.0, units_per_case=12,
    ),
    "cart": ItemKind(
        "Vape Cart 1g", "ea", "Concentrate", "Cartridge", "Unit", "Cartridge",
        (20, 400), 0, (1200, 2400), unit_weight=1.0,
    ),
    "eighth": ItemKind(
        "Eighth 3.5g", "ea", "Buds", "Packaged Flower", "Unit", "Flower",
        (20, 500), 0, (1000, 2200), unit_weight=3.5, units_per_case=24,
    ),
}  # fmt: skip

UOMS: dict[str, tuple[int | None, str]] = {
    "ea": (1, "Each"),
    "g": (2, "Gram"),
    "kg": (3, "Kilogram"),
    "mg": (4, "Milligram"),
    "oz": (5, "Ounce"),
    "lb": (6, "Pound"),
    "bushel": (None, "Bushel"),
}

APEX_UNIT_ALIASES = {
    "Unit": "ea",
    "Gram": "g",
    "Pound": "lb",
    "Ounce": "oz",
    "Kilogram": "kg",
    "Milligram": "mg",
    "Case": "case",
}

APEX_CATEGORIES = {
    "Flower": 1,
    "Pre-roll": 2,
    "Cartridge": 3,
    "Concentrate": 4,
    "Edibles & Drink": 5,
    "Merchandise": 6,
}

CANNABINOIDS = [
    ("Tetrahydrocannabinol", "THC"),
    ("Tetrahydrocannabinolic Acid", "THCa"),
    ("Delta-9 Tetrahydrocannabinol", "D9-THC"),
    ("Delta-8 Tetrahydrocannabinol", "D8-THC"),
    ("Tetrahydrocannabivarin", "THCV"),
    ("Cannabidiol", "CBD"),
    ("Cannabidiolic Acid", "CBDa"),
    ("Cannabigerol", "CBG"),
    ("Cannabinol", "CBN"),
    ("Cannabichromene", "CBC"),
    ("Total Active Cannabinoids", "TAC"),
]

#: Flourish lab-result field stem of each Apex cannabinoid abbreviation.
CANNABINOID_FIELDS = {
    "THC": "thc",
    "THCa": "thca",
    "D9-THC": "delta_9_thc",
    "D8-THC": "delta_8_thc",
    "THCV": "thcv",
    "CBD": "cbd",
    "CBDa": "cbda",
    "CBG": "cbg",
    "CBN": "cbn",
    "TAC": "tac",
}

TERPENES = [
    ("Myrcene", "myrcene"),
    ("Limonene", "limonene"),
    ("Beta-Caryophyllene", "beta_caryophyllene"),
    ("Linalool", "linalool"),
    ("Alpha-Pinene", "alpha_pinene"),
    ("Beta-Pinene", "beta_pinene"),
    ("Alpha-Humulene", "alpha_humulene"),
    ("Terpinolene", "terpinolene"),
    ("Ocimene", "ocimene"),
    ("Alpha-Bisabolol", "alpha_bisabolol"),
    ("Nerolidol", "nerolidol"),
    ("Valencene", "valencene"),
    ("Geraniol", "geraniol"),
    ("Eucalyptol", "eucalyptol"),
    ("Camphene", "camphene"),
]

PARENT_STATUSES = [
    (1, "Submitted"),
    (2, "Accepted"),
    (3, "Pending Shipment"),
    (4, "In Transit"),
    (5, "Delivered"),
    (6, "Complete"),
]

APEX_ABILITIES = (
    "view:company",
    "view:products",
    "view:brands",
    "view:batches",
    "view:available-inventory",
    "view:tags",
    "view:buyers",
    "view:buyerstages",
    "view:dealflows",
    "view:netterms",
    "view:shipping-orders",
    "view:receiving-orders",
    "update:products",
    "update:batches",
    "update:shipping-orders",
    "create:shipping-orders",
)

CALIFORNIA = {"id": 5, "text": "California", "value": "CA"}


@dataclass(frozen=True)
class Address:
    line_one: str
    line_two: str | None
    city: str
    zip: str


@dataclass(frozen=True)
class CustomerSpec:
    """An Apex buyer and the Flourish destinations it should or should not match.

    ``case`` names the matching situation: clean, cosmetic (license and address
    written differently), address_differs, ambiguous (one license on two
    destinations at the same address), unmatched, no_license.
    """

    name: str
    case: str
    apex_license: str | None
    apex_address: Address
    destinations: tuple[tuple[str, str, Address], ...] = ()
    disabled: bool = False


@dataclass(frozen=True)
class FacilitySpec:
    name: str
    license: str
    facility_type: str
    operation_id: int
    tag_code: str
    share: float
    kinds: tuple[str, ...]
    wholesale_room: str
    other_rooms: tuple[str, ...]
    address: Address
    unmapped_item: tuple[str, str, str]
    sales_rep_required: bool = False


@dataclass(frozen=True)
class TenantSpec:
    name: str
    prefix: str
    apex_company_id: int
    grams_per_pound: str
    strains: tuple[str, ...]
    free_text_skus: dict[tuple[str, str], str]
    facilities: tuple[FacilitySpec, ...]
    unit_ids: dict[str, int]
    cannabinoid_start: int
    terpene_start: int
    deal_flows: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    customers: tuple[CustomerSpec, ...]
    distributors: tuple[tuple[str, str, Address], ...]
    sales_reps: tuple[tuple[str, str, str, int | None], ...] = field(default=())


def _addr(
    line_one: str, city: str, zip_code: str, line_two: str | None = None
) -> Address:
    return Address(line_one, line_two, city, zip_code)


GVF_CUSTOMERS = (
    CustomerSpec(
        "Harbor Wellness Collective", "clean", "C10-0000451-LIC",
        _addr("1200 Harbor Blvd", "Oakland", "94607"),
        (("Harbor Wellness Collective", "C10-0000451-LIC",
          _addr("1200 Harbor Blvd", "Oakland", "94607")),),
    ),
    CustomerSpec(
        "Sunset Dispensary", "cosmetic", "C10-0000782-LIC",
        _addr("455 Sunset Street", "San Francisco", "94110", "Suite 200"),
        (("Sunset Dispensary", "c10 0000782 lic",
          _addr("455 Sunset St", "San Francisco", "94110-2231", "Ste 200")),),
    ),
    CustomerSpec(
        "Mission Green", "cosmetic", "c10-0001023-lic",
        _addr("88 Mission Avenue", "San Jose", "95112"),
        (("Mission Green", "C10-0001023-LIC",
          _addr("88 Mission Ave", "San Jose", "95112")),),
    ),
    CustomerSpec(
        "Redwood Remedies", "clean", "C10-0001377-LIC",
        _addr("2100 Redwood Highway", "Ukiah", "95482", "Unit 4"),
        (("Redwood Remedies", "C10-0001377-LIC",
          _addr("2100 Redwood Highway", "Ukiah", "95482", "Unit 4")),),
    ),
    CustomerSpec(
        "Old Town Cannabis", "clean", "C10-0001590-LIC",
        _addr("19 Old Town Road", "Sacramento", "95814"),
        (("Old Town Cannabis", "C10-0001590-LIC",
          _addr("19 Old Town Road", "Sacramento", "95814")),),
        disabled=True,
    ),
    CustomerSpec(
        "Bay Leaf Provisions", "address_differs", "C10-0002210-LIC",
        _addr("9 Embarcadero Road", "Palo Alto", "94301"),
        (("Bay Leaf Provisions", "C10-0002210-LIC",
          _addr("740 El Camino Real", "Palo Alto", "94301")),),
    ),
    CustomerSpec(
        "Golden Gate Greens", "address_differs", "C10-0002875-LIC",
        _addr("310 Market Street", "San Francisco", "94105"),
        (("Golden Gate Greens", "C10-0002875-LIC",
          _addr("318 Market Street", "San Francisco", "94105")),),
    ),
    CustomerSpec(
        "Valley Canna", "ambiguous", "C10-0003344-LIC",
        _addr("77 Valley Drive", "Fresno", "93706"),
        (("Valley Canna", "C10-0003344-LIC",
          _addr("77 Valley Drive", "Fresno", "93706")),
         ("Valley Canna LLC", "C10-0003344-LIC",
          _addr("77 Valley Drive", "Fresno", "93706"))),
    ),
    CustomerSpec(
        "Peak Pharms", "unmatched", "C10-0009999-LIC",
        _addr("5 Summit Way", "Truckee", "96161"),
    ),
    CustomerSpec(
        "Green Door Delivery", "no_license", None,
        _addr("1450 Folsom Street", "San Francisco", "94103"),
    ),
)  # fmt: skip

COASTAL_CUSTOMERS = (
    CustomerSpec(
        "Harbor Wellness Collective", "clean", "C10-0000451-LIC",
        _addr("1200 Harbor Blvd", "Oakland", "94607"),
        (("Harbor Wellness Collective", "C10-0000451-LIC",
          _addr("1200 Harbor Blvd", "Oakland", "94607")),),
    ),
    CustomerSpec(
        "Pacific Bloom", "clean", "C10-0004410-LIC",
        _addr("600 Ocean Avenue", "Santa Cruz", "95060"),
        (("Pacific Bloom", "C10-0004410-LIC",
          _addr("600 Ocean Avenue", "Santa Cruz", "95060")),),
    ),
    CustomerSpec(
        "Surfside Supply", "cosmetic", "C10 0004522 LIC",
        _addr("31 Beach Street", "Monterey", "93940", "Suite 5"),
        (("Surfside Supply", "C10-0004522-LIC",
          _addr("31 Beach St", "Monterey", "93940-1102", "Ste 5")),),
    ),
    CustomerSpec(
        "Tidewater Wellness", "address_differs", "C10-0004687-LIC",
        _addr("1 Wharf Road", "Santa Barbara", "93101"),
        (("Tidewater Wellness", "C10-0004687-LIC",
          _addr("15 State Street", "Santa Barbara", "93101")),),
    ),
    CustomerSpec(
        "Kelp Forest Collective", "ambiguous", "C10-0004799-LIC",
        _addr("210 Cannery Row", "Monterey", "93940"),
        (("Kelp Forest Collective", "C10-0004799-LIC",
          _addr("210 Cannery Row", "Monterey", "93940")),
         ("Kelp Forest Collective - Retail", "C10-0004799-LIC",
          _addr("210 Cannery Row", "Monterey", "93940"))),
    ),
    CustomerSpec(
        "Driftwood Dispensary", "unmatched", "C10-0004901-LIC",
        _addr("44 Driftwood Lane", "Half Moon Bay", "94019"),
    ),
)  # fmt: skip

TENANTS = (
    TenantSpec(
        name="Green Valley Farms",
        prefix="GVF",
        apex_company_id=4101,
        grams_per_pound="453.59237",
        strains=("Blue Dream", "Gelato", "OG Kush", "Wedding Cake", "Sour Diesel"),
        free_text_skus={("eighth", "Gelato"): "GELATO-3.5G",
                        ("bulk_lb", "Blue Dream"): "BD-BULK-LB"},
        facilities=(
            FacilitySpec(
                "GVF Cultivation", "CCL19-0001234", "Grower", 712, "0603001", 0.40,
                ("bulk_g", "bulk_lb", "smalls"), "Wholesale Vault",
                ("Flower Room 1", "Drying Room", "Wholesale Vault - Overflow",
                 "Quarantine"),
                _addr("4100 River Road", "Salinas", "93908"),
                ("bulk_g", "House Trim", "TRIM-BULK-G"),
            ),
            FacilitySpec(
                "GVF Processing", "CDPH-10004567", "Manufacturer", 713, "0603002",
                0.25, ("resin", "preroll", "cart", "eighth"), "Finished Goods Vault",
                ("Extraction Lab", "Packaging", "Quarantine"),
                _addr("4120 River Road", "Salinas", "93908", "Building B"),
                ("preroll", "Infused", "INF-PR-1G"),
            ),
        ),
        unit_ids={"Unit": 11, "Gram": 12, "Pound": 13, "Ounce": 14,
                  "Kilogram": 15, "Milligram": 16, "Case": 17},
        cannabinoid_start=21,
        terpene_start=401,
        deal_flows=(
            ("Standard Wholesale", (
                ("New Order", "Submitted"), ("Invoice Finalized", "Accepted"),
                ("Order Approved", "Accepted"), ("Order Packed", "Pending Shipment"),
                ("Out for Delivery", "In Transit"), ("Delivered", "Delivered"),
                ("Paid in Full", "Complete"))),
            ("Consignment", (
                ("Consignment Request", "Submitted"),
                ("Consignment Accepted", "Accepted"),
                ("Staged", "Pending Shipment"), ("On Truck", "In Transit"),
                ("Dropped Off", "Delivered"), ("Settled", "Complete"))),
        ),
        customers=GVF_CUSTOMERS,
        distributors=(("Northstar Distribution", "C11-0000321-LIC",
                       _addr("900 Industrial Way", "Hayward", "94545")),),
        sales_reps=(("Sam", "Lopez", "sam.lopez@gvf.example", None),
                    ("Dana", "Rivera", "dana.rivera@gvf.example", 0),
                    ("Alex", "Chen", "alex.chen@gvf.example", 1)),
    ),
    TenantSpec(
        name="Coastal Cultivators",
        prefix="COAST",
        apex_company_id=5207,
        grams_per_pound="454",
        strains=("Gelato", "Pineapple Express", "Zkittlez", "Lemon Haze"),
        free_text_skus={("eighth", "Gelato"): "GELATO-3.5G"},
        facilities=(
            FacilitySpec(
                "Coastal Main", "CCL21-0009876", "Microbusiness", 958, "0607001", 0.35,
                ("bulk_g", "bulk_lb", "smalls", "resin", "preroll", "cart", "eighth"),
                "Wholesale Vault", ("Greenhouse 2", "Curing Room", "Packaging"),
                _addr("77 Coast Highway", "Watsonville", "95076"),
                ("bulk_g", "Mixed Shake", "SHAKE-BULK"),
                sales_rep_required=True,
            ),
        ),
        unit_ids={"Case": 31, "Pound": 32, "Gram": 33, "Unit": 34,
                  "Ounce": 35, "Kilogram": 36, "Milligram": 37},
        cannabinoid_start=61,
        terpene_start=451,
        deal_flows=(
            ("Coastal Orders", (
                ("Received", "Submitted"), ("Confirmed", "Accepted"),
                ("Ready to Ship", "Pending Shipment"), ("Manifested", "In Transit"),
                ("Received by Buyer", "Delivered"), ("Closed", "Complete"))),
        ),
        customers=COASTAL_CUSTOMERS,
        distributors=(("Coastline Logistics", "C11-0000777-LIC",
                       _addr("12 Harbor Way", "Moss Landing", "95039")),),
        sales_reps=(("Jordan", "Park", "jordan.park@coastal.example", 0),
                    ("Riley", "Moss", "riley.moss@coastal.example", None)),
    ),
)  # fmt: skip
