using Xunit;

// Tests share one device per backend; launches from several threads at once are not worth the risk.
[assembly: CollectionBehavior(CollectionBehavior.CollectionPerAssembly)]
