namespace Qtip.Tool.Cli;

/// <summary>The documented exit codes of qtip.</summary>
public static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Ok = 0;

    /// <summary>Bad command line: unknown option, value out of range.</summary>
    public const int Usage = 1;

    /// <summary>The requested backend has no usable device.</summary>
    public const int BackendUnavailable = 2;

    /// <summary>Bad model or input file, unsupported shape, write failure.</summary>
    public const int BadInput = 3;

    /// <summary>Internal error: an exception no check anticipated, i.e. a bug in qtip ("internal error: … — please report").</summary>
    public const int InternalError = 4;

    /// <summary>Interrupted (Ctrl-C).</summary>
    public const int Interrupted = 130;
}
