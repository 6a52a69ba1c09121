from tests.functional.test_api import *  # noqa
def test_dbg(people):
    qs = Person.objects.all().order_by("name").order_by("city")
    print(qs._order)
    print(names(Person.objects.all()))
    print(names(qs))
