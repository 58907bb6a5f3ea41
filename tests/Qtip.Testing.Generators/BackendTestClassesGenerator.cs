using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Text;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;

namespace Qtip.Testing.Generators;

/// <summary>
/// Writes the per-backend test classes of every abstract <c>Qtip.Testing.BackendTest</c> class, the way ILGPU.Tests runs
/// one abstract test class per accelerator flavour: a test class is written once, and this generator emits
/// <code>
/// public sealed class XTestsCpu() : XTests(BackendKind.Cpu);
/// [Trait("Category", "Gpu")] public sealed class XTestsCuda() : XTests(BackendKind.Cuda);
/// [Trait("Category", "Gpu")] public sealed class XTestsOpenCL() : XTests(BackendKind.OpenCL);
/// </code>
/// (the GPU trait is what CI filters out). The rules, in one place:
/// <list type="bullet">
/// <item>Every backend unless the class carries <c>[RunOn(...)]</c>, which lists the backends it runs on (none: an
/// abstract intermediate base).</item>
/// <item>A class whose constructor takes <c>(BackendKind backend, KernelStyle style)</c> tests both kernel styles: each
/// backend runs its default style (CPU and OpenCL serial, CUDA grouped) and the CPU simulator also runs the grouped
/// (GPU) style at tiny sizes, as <c>XTestsCpuGrouped</c>.</item>
/// <item>A class of that name written by hand is left alone (so a branch that still has hand-written subclasses builds);
/// the coverage test (<c>BackendTestCoverage</c>) fails on it and names it.</item>
/// <item>Nested or generic abstract test classes are refused (QTG001).</item>
/// </list>
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed class BackendTestClassesGenerator : IIncrementalGenerator
{
    private const string BackendTest = "Qtip.Testing.BackendTest";
    private const string RunOn = "Qtip.Testing.RunOnAttribute";
    private const string BackendKind = "Qtip.Kernels.Runtime.BackendKind";
    private const string KernelStyle = "Qtip.Kernels.Llama.KernelStyle";
    private const string Tool = "Qtip.Testing.Generators";

    private static readonly DiagnosticDescriptor Unsupported = new(
        "QTG001", "Backend test class not supported",
        "{0}: the per-backend test classes generator needs a non-nested, non-generic abstract class with a constructor (BackendKind backend) or (BackendKind backend, KernelStyle style); {1}",
        "Qtip.Testing", DiagnosticSeverity.Error, isEnabledByDefault: true);

    /// <summary>Backends in the order their classes are written, with the style each runs when the class takes one.</summary>
    private static readonly (string Backend, string? Style, string Suffix)[] PlainVariants =
    [
        ("Cpu", null, "Cpu"),
        ("Cuda", null, "Cuda"),
        ("OpenCL", null, "OpenCL"),
    ];

    private static readonly (string Backend, string? Style, string Suffix)[] StyledVariants =
    [
        ("Cpu", "Serial", "Cpu"),
        ("Cpu", "Grouped", "CpuGrouped"),
        ("Cuda", "Grouped", "Cuda"),
        ("OpenCL", "Serial", "OpenCL"),
    ];

    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        var classes = context.SyntaxProvider.CreateSyntaxProvider(
                static (node, _) => node is ClassDeclarationSyntax c && c.BaseList is not null && c.Modifiers.Any(SyntaxKind.AbstractKeyword),
                static (ctx, ct) => Describe(ctx, ct))
            .Where(static m => m is not null)
            .Select(static (m, _) => m!);
        context.RegisterSourceOutput(classes, static (spc, m) => Emit(spc, m));
    }

    private static Output? Describe(GeneratorSyntaxContext ctx, CancellationToken ct)
    {
        var node = (ClassDeclarationSyntax)ctx.Node;
        if (ctx.SemanticModel.GetDeclaredSymbol(node, ct) is not INamedTypeSymbol type || !type.IsAbstract)
            return null;
        // A partial class is described once, from its first declaration.
        if (type.DeclaringSyntaxReferences.Length > 0 && type.DeclaringSyntaxReferences[0].GetSyntax(ct) != node)
            return null;
        if (!DerivesFrom(type, BackendTest))
            return null;
        string name = type.ToDisplayString();
        if (type.ContainingType is not null)
            return Output.Fail(node, name, "it is nested in " + type.ContainingType.ToDisplayString());
        if (type.IsGenericType)
            return Output.Fail(node, name, "it is generic");
        bool plain = false, styled = false;
        foreach (var ctor in type.InstanceConstructors)
        {
            var p = ctor.Parameters;
            if (p.Length >= 1 && Is(p[0].Type, BackendKind) && p.Skip(1).All(x => x.HasExplicitDefaultValue))
                plain = true;
            if (p.Length >= 2 && Is(p[0].Type, BackendKind) && Is(p[1].Type, KernelStyle) && p.Skip(2).All(x => x.HasExplicitDefaultValue))
                styled = true;
        }
        if (!plain && !styled)
            return Output.Fail(node, name, "it has no such constructor");

        var backends = new HashSet<string>(PlainVariants.Select(v => v.Backend));
        var runOn = type.GetAttributes().FirstOrDefault(a => a.AttributeClass is { } c && Is(c, RunOn));
        if (runOn is not null)
        {
            backends.Clear();
            foreach (var arg in runOn.ConstructorArguments)
            {
                var values = arg.Kind == TypedConstantKind.Array ? arg.Values : [arg];
                foreach (var value in values)
                    backends.Add(EnumName(value));
            }
        }

        string ns = type.ContainingNamespace.IsGlobalNamespace ? "" : type.ContainingNamespace.ToDisplayString();
        string access = type.DeclaredAccessibility == Accessibility.Public ? "public" : "internal";
        var compilation = ctx.SemanticModel.Compilation;
        var source = new StringBuilder();
        source.Append("// <auto-generated/>\n");
        source.Append("// Written by ").Append(Tool).Append(" (BackendTestClassesGenerator): the per-backend test classes of ").Append(name).Append(".\n");
        if (ns.Length > 0)
            source.Append("namespace ").Append(ns).Append(";\n");
        int written = 0;
        foreach (var (backend, style, suffix) in styled ? StyledVariants : PlainVariants)
        {
            if (!backends.Contains(backend))
                continue;
            string className = type.Name + suffix;
            // Written by hand: leave it (the coverage test names it).
            if (compilation.GetTypeByMetadataName(ns.Length > 0 ? ns + "." + className : className) is not null)
                continue;
            source.Append('\n');
            source.Append("[global::System.CodeDom.Compiler.GeneratedCode(\"").Append(Tool).Append("\", \"1.0\")]\n");
            if (backend != "Cpu")
                source.Append("[global::Xunit.Trait(\"Category\", \"Gpu\")]\n");
            source.Append(access).Append(" sealed class ").Append(className).Append("() : global::").Append(name)
                .Append("(global::").Append(BackendKind).Append('.').Append(backend);
            if (style is not null)
                source.Append(", global::").Append(KernelStyle).Append('.').Append(style);
            source.Append(");\n");
            written++;
        }
        if (written == 0)
            return null;
        return new Output(name + ".Backends.g.cs", source.ToString(), null, null, default, default);
    }

    private static void Emit(SourceProductionContext spc, Output m)
    {
        if (m.Error is not null)
        {
            var location = Location.Create(m.File ?? "", m.Span, m.Lines);
            spc.ReportDiagnostic(Diagnostic.Create(Unsupported, location, m.HintName, m.Error));
            return;
        }
        spc.AddSource(m.HintName, SourceText.From(m.Source!, Encoding.UTF8));
    }

    private static bool DerivesFrom(INamedTypeSymbol type, string baseName)
    {
        for (var b = type.BaseType; b is not null; b = b.BaseType)
        {
            if (Is(b, baseName))
                return true;
        }
        return false;
    }

    private static bool Is(ITypeSymbol type, string fullName) => type.ToDisplayString() == fullName;

    private static string EnumName(TypedConstant value)
    {
        if (value.Type is INamedTypeSymbol e)
        {
            foreach (var f in e.GetMembers().OfType<IFieldSymbol>())
            {
                if (f.HasConstantValue && Equals(f.ConstantValue, value.Value))
                    return f.Name;
            }
        }
        return value.Value?.ToString() ?? "";
    }

    /// <summary>What one class produces: a source file, or an error with where it points. Equatable (strings and
    /// spans only), so an edit elsewhere does not re-emit it.</summary>
    private sealed class Output(string hintName, string? source, string? error, string? file, TextSpan span, LinePositionSpan lines)
        : IEquatable<Output>
    {
        public string HintName { get; } = hintName;
        public string? Source { get; } = source;
        public string? Error { get; } = error;
        public string? File { get; } = file;
        public TextSpan Span { get; } = span;
        public LinePositionSpan Lines { get; } = lines;

        public static Output Fail(ClassDeclarationSyntax node, string name, string why)
        {
            var location = node.Identifier.GetLocation();
            return new Output(name, null, why, location.SourceTree?.FilePath, location.SourceSpan, location.GetLineSpan().Span);
        }

        public bool Equals(Output? other) => other is not null && HintName == other.HintName && Source == other.Source
            && Error == other.Error && File == other.File && Span == other.Span && Lines == other.Lines;

        public override bool Equals(object? obj) => Equals(obj as Output);

        public override int GetHashCode() => (HintName.GetHashCode() * 31) ^ (Source?.GetHashCode() ?? 0) ^ (Error?.GetHashCode() ?? 0);
    }
}
