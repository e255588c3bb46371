using AssuranceGateway.Enforcement;

namespace AssuranceGateway.UnitTests.Enforcement;

public sealed class BindingNamesTests
{
    [Fact]
    public void Known_EveryNamedBindingAndItsTextForLua_Agree()
    {
        var all = BindingNames.All.Aggregate(Bindings.None, (known, binding) => known | binding.Flag);

        Assert.Equal(BindingNames.Known, all);
        Assert.Equal(BindingNames.KnownText, ((int)all).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }
}
