namespace AssuranceGateway.Testing;

internal static class TestPlaceholder
{
}
