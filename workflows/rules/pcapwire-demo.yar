/*
  Demonstration rules shipped with pcapwire's workflows. They look for well-known,
  harmless test content and a few classic patterns in reassembled streams. Replace or
  extend them with your own rule directories (workflow `with.rules`).

  Meta understood by pcapwire: severity (info|low|medium|high|critical), score (0-100),
  category. Without either, the step's default_severity applies.
*/

rule EICAR_Test_File : test antivirus
{
    meta:
        description = "The EICAR anti-virus test file (harmless, by design)"
        severity = "medium"
        category = "test-file"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar
}

rule PE_Executable_In_Stream : executable
{
    meta:
        description = "A Windows PE executable carried in a stream"
        severity = "high"
        score = 75
        category = "executable-transfer"
    strings:
        $dos = "This program cannot be run in DOS mode"
        $mz = { 4D 5A }
    condition:
        $mz and $dos and @dos[1] - @mz[1] < 512 and @dos[1] > @mz[1]
}

rule PowerShell_Download_Cradle : powershell downloader
{
    meta:
        description = "PowerShell that downloads and runs code"
        severity = "high"
        category = "execution"
    strings:
        $wc = "Net.WebClient" nocase
        $ds = "DownloadString" nocase
        $iex = /\b(IEX|Invoke-Expression)\b/ nocase
    condition:
        $ds and ($wc or $iex)
}

rule HTTP_Basic_Auth_Cleartext : credentials http
{
    meta:
        description = "HTTP Basic credentials sent in clear text"
        score = 30
        category = "credential-exposure"
    strings:
        $auth = /\r\nAuthorization: Basic [A-Za-z0-9+\/=]{4,}\r\n/
    condition:
        $auth
}
